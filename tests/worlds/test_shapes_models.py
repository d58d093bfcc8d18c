"""The shipped shapes models: loading, shapes and ranges, gradients, the open_clip path."""

from __future__ import annotations

import pytest
import torch

import energyql.generators
from energyql.generators.base import Generator
from energyql.worlds import read_safetensors, sha256_file, write_safetensors
from energyql.worlds.shapes import CATALOG, render
from energyql.worlds.shapes import classifier as classifier_module
from energyql.worlds.shapes import clip as clip_module
from energyql.worlds.shapes import generator as generator_module


@pytest.fixture(scope="module")
def generator():
    return energyql.generators.load("shapes")


@pytest.fixture(scope="module")
def classifier():
    return classifier_module.load()


def test_generator_loads_through_the_registry(generator):
    assert isinstance(generator, generator_module.ShapesGenerator)
    assert isinstance(generator, Generator)
    assert generator.id == "shapes" and generator.catalog == "shapes"
    assert 32 <= generator.latent_dim <= 128 and generator.image_size == 32
    assert generator.weights_digest == sha256_file(generator_module.WEIGHTS)
    assert not generator.training
    assert not any(p.requires_grad for p in generator.parameters())


def test_gens_lists_shapes_as_ready():
    from energyql.cli.gens import weights_status
    from energyql.generators.registry import resolve

    assert weights_status(resolve("shapes"))[0] == "ready"


def test_generator_decodes_differentiably_into_unit_range(generator):
    z = generator.sample_latent(8, generator=torch.Generator().manual_seed(0)).requires_grad_()
    images = generator.decode(z)
    assert images.shape == (8, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    images.mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    samples = generator.sample(4, seed=1)
    assert torch.equal(samples, generator.sample(4, seed=1))


def test_classifier_heads_follow_the_catalog(classifier):
    images, labels = render.sample_scenes(200, seed=123)
    images.requires_grad_()
    logits = classifier(images)
    assert set(logits) == set(CATALOG.attribute_names)
    for attribute in CATALOG.attributes:
        assert logits[attribute.name].shape == (200, len(attribute.values))
        accuracy = (logits[attribute.name].argmax(1) == labels[attribute.name]).float().mean()
        assert accuracy > 0.95
    logits["shape"][:, 2].sum().backward()
    assert images.grad.abs().sum() > 0
    assert not classifier.training and not any(p.requires_grad for p in classifier.parameters())


def test_clip_loads_through_open_clip():
    import open_clip

    clip_module.register()
    clip_module.register()  # idempotent
    assert clip_module.MODEL_NAME in open_clip.list_models()
    model, tokenizer = clip_module.load()
    # The shipped file is half precision; open_clip casts it into the float32 model.
    assert next(model.parameters()).dtype == torch.float32
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    cfg = model.visual.preprocess_cfg
    assert tuple(cfg["mean"]) == pytest.approx(clip_module.MEAN)
    assert tuple(cfg["std"]) == pytest.approx(clip_module.STD)
    assert cfg["size"] in (clip_module.IMAGE_SIZE, (clip_module.IMAGE_SIZE,) * 2)
    images, _ = render.sample_scenes(4, seed=0)
    with torch.no_grad():
        image = model.encode_image(clip_module.normalize(images), normalize=True)
        text = model.encode_text(tokenizer(["a blue triangle", "a shape"]), normalize=True)
    assert image.shape[0] == 4 and text.shape[0] == 2 and image.shape[1] == text.shape[1]


def test_clip_tells_colours_apart_on_rendered_scenes():
    from energyql.worlds.shapes.card import zero_shot

    model, tokenizer = clip_module.load()
    images, labels = render.sample_scenes(300, seed=77)
    accuracy = zero_shot(model, tokenizer, images, labels)
    assert accuracy["color"] > 0.9 and accuracy["shape"] > 0.8


def test_safetensors_helpers_round_trip(tmp_path):
    tensors = {"a": torch.arange(6.0).view(2, 3), "b": torch.ones(2, dtype=torch.int64)}
    digest = write_safetensors(tmp_path / "w.safetensors", tensors, {"width": 3, "name": "x"})
    assert digest == sha256_file(tmp_path / "w.safetensors")
    loaded, meta = read_safetensors(tmp_path / "w.safetensors")
    assert torch.equal(loaded["a"], tensors["a"]) and meta == {"width": 3, "name": "x"}
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_weights_raise_a_clear_error(tmp_path):
    from energyql.errors import WeightsMissingError

    with pytest.raises(WeightsMissingError, match="missing"):
        generator_module.load(path=tmp_path / "nope.safetensors")
