"""Differentiable augmentation: layout, reproducibility, gradients, each augmentation's effect."""

import pytest
import torch

from energyql.controls.augment import augment

OFF = dict(translate=0.0, scale=(1.0, 1.0), rotate_degrees=0.0, cutout=0.0)


def test_copies_are_copy_major_and_reproducible():
    images = torch.rand(2, 3, 16, 16)
    out = augment(images, 3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 16, 16)
    again = augment(images, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    plain = augment(images, 3, generator=torch.Generator().manual_seed(0), **OFF)
    assert torch.allclose(plain[2:4], images, atol=1e-5)  # copy 1 of the batch
    assert augment(images, 0) is images


def test_gradients_reach_the_images_through_every_augmentation():
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = augment(images, 4, generator=torch.Generator().manual_seed(1),
                  brightness=0.2, contrast=0.3, saturation=0.4)
    (out * torch.randn_like(out)).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert (images.grad.abs().sum((1, 2, 3)) > 0).all()


def test_cutout_zeroes_a_square():
    images = torch.ones(1, 3, 20, 20)
    out = augment(images, 1, generator=torch.Generator().manual_seed(0), **{**OFF, "cutout": 0.25})
    assert int((out[0, 0] == 0).sum()) == 25


@pytest.mark.parametrize("option", ["brightness", "contrast", "saturation"])
def test_colour_jitter_changes_colour_but_not_geometry(option):
    images = torch.rand(4, 3, 8, 8)
    out = augment(images, 2, generator=torch.Generator().manual_seed(0), **{**OFF, option: 0.5})
    assert not torch.allclose(out, images.repeat(2, 1, 1, 1), atol=1e-3)
    if option == "brightness":  # a shift of every pixel by the same amount
        delta = out - images.repeat(2, 1, 1, 1)
        mean = delta.mean((1, 2, 3), keepdim=True).expand_as(delta)
        assert torch.allclose(delta, mean, atol=1e-5)


def test_without_colour_the_random_stream_is_unchanged():
    images = torch.rand(2, 3, 12, 12)
    base = augment(images, 2, generator=torch.Generator().manual_seed(3))
    coloured = augment(images, 2, generator=torch.Generator().manual_seed(3), brightness=1e-9)
    assert torch.allclose(base, coloured, atol=1e-6)
