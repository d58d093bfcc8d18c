"""StyleGAN2's noise option: random per-image noise maps by default (PromptGen), or fixed."""

import pytest
import torch

from energyql.errors import EnergyQLError
from energyql.generators import GeneratorSpec
from energyql.generators.stylegan2 import (
    DEFAULT_NOISE,
    StyleGAN2Generator,
    load_spec,
    noise_mode,
)
from tests.generators.test_stylegan2 import save_checkpoint, tiny


def test_noise_defaults_to_random_as_in_promptgen():
    assert DEFAULT_NOISE == "random" and noise_mode({}) == "random"
    assert noise_mode({"noise": "fixed"}) == "fixed"
    assert noise_mode({"randomize_noise": False}) == "fixed"  # the older option still works
    with pytest.raises(EnergyQLError, match="unknown StyleGAN2 noise mode 'fixd'") as info:
        noise_mode({"noise": "fixd"})
    assert "did you mean 'fixed'?" in info.value.hint


def test_loader_applies_the_noise_option(tmp_path):
    path = save_checkpoint(tiny(16), tmp_path / "g.pt")
    spec = GeneratorSpec("stylegan2:x", "faces", "", path=str(path))
    assert load_spec(spec, mean_samples=16).randomize_noise
    assert not load_spec(spec, mean_samples=16, noise="fixed").randomize_noise


def test_random_noise_is_per_image_and_reproducible_from_the_latents():
    net = tiny(16)
    random_gen = StyleGAN2Generator(net, randomize_noise=True, mean_samples=16)
    fixed_gen = StyleGAN2Generator(net, randomize_noise=False, mean_samples=16)
    z = torch.randn(2, net.style_dim, generator=torch.Generator().manual_seed(0))
    first = random_gen.decode(z)
    assert torch.equal(first, random_gen.decode(z.clone()))  # same z, same noise, same image
    assert not torch.allclose(first, fixed_gen.decode(z))
    maps = random_gen.noise_maps(z)
    assert len(maps) == net.num_layers and maps[0].shape[0] == 2
    assert not torch.equal(maps[-1][0], maps[-1][1])  # each image draws its own maps
    assert not torch.equal(maps[-1], random_gen.noise_maps(z + 1e-3)[-1])
    # Gradients still reach the latents through the random-noise path.
    z.requires_grad_(True)
    random_gen.decode(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
