"""Per-world and per-generator defaults: PromptGen's for real models, the measured ones for
shapes."""

import pytest
import torch

from energyql.catalog import FACES, GENERIC, ClipSettings
from energyql.controls.augment import augment
from energyql.energies.base import Features
from energyql.energies.clip import ClipEnergy
from energyql.errors import EnergyQLError
from energyql.workflow import defaults_for
from energyql.worlds.shapes import CATALOG as SHAPES
from tests.controls.test_registry import FakeClip

PROMPTGEN_AUGMENT = {"translate": 0.125, "scale": (1.0, 1.0), "rotate_degrees": 0.0,
                     "cutout": 0.5, "brightness": 0.5, "contrast": 0.5, "saturation": 1.0}


@pytest.mark.parametrize("catalog", [FACES, GENERIC])
def test_real_clips_get_promptgens_energy(catalog):
    # 600 · (1 − cos) over 50 DiffAugment copies, augmented at full resolution.
    clip = catalog.clip
    assert (clip.weight, clip.copies, clip.augment_at) == (600.0, 50, "full")
    assert catalog.clip.augment_options == PROMPTGEN_AUGMENT


def test_shapes_keeps_its_measured_clip_settings():
    assert (SHAPES.clip.weight, SHAPES.clip.copies, SHAPES.clip.augment_at) == (None, 4, "clip")
    assert SHAPES.clip.augment_options == {"translate": 0.08, "scale": (0.9, 1.1),
                                           "rotate_degrees": 10.0, "cutout": 0.0}


def test_unknown_augment_at_is_refused():
    with pytest.raises(EnergyQLError, match="unknown augment_at setting 'ful'"):
        ClipSettings(augment_at="ful")


def test_stylegan2_trains_with_promptgens_settings():
    for name in ("stylegan2-ffhq", "stylegan2-church", "stylegan2:/some/ckpt.pt"):
        assert defaults_for(name) == {"steps": 2000, "batch": 8, "lr": 1e-3, "grad_clip": 1.0,
                                      "clip_copies": 50}


def test_shapes_training_defaults_are_unchanged():
    assert defaults_for("shapes") == {"steps": 600, "batch": 64, "lr": 3e-3, "clip_copies": 4,
                                      "warm_start_samples": 8192, "chain_weight": 3.0,
                                      "smooth_score_share": 1.0,
                                      "forward_weight": 0.0, "refit_samples": 2048,
                                      "coupling": "spline"}


def test_the_shapes_flow_is_sized_to_its_latent():
    from energyql.flows import flow_config_for
    from energyql.worlds.shapes.generator import load

    config = flow_config_for(load())  # what training builds with no blocks or width given
    assert (config.blocks, config.width) == (8, 128)


def test_a_spec_may_override_its_familys_training_defaults():
    from energyql.generators.registry import GeneratorSpec

    spec = GeneratorSpec("mine", "faces", "energyql.generators.stylegan2:load_spec",
                         training=(("lr", 5e-4),))
    assert spec.training_defaults() == {"steps": 2000, "batch": 8, "lr": 5e-4, "grad_clip": 1.0}


def test_promptgen_colour_ranges_are_reached():
    # brightness ±0.5 (added), saturation ×[0, 2], contrast ×[0.5, 1.5]: a grey image shifts
    # by up to 0.5, no more, and a cutout of half the side zeroes a quarter of the pixels.
    grey = torch.full((1, 3, 16, 16), 0.5)
    views = augment(grey, 400, generator=torch.Generator().manual_seed(0), **PROMPTGEN_AUGMENT)
    shifts = views.amax(dim=(1, 2, 3)) - 0.5
    assert 0.45 < float(shifts.max()) <= 0.5 + 1e-5
    assert float(shifts.min()) < -0.45
    assert float((views == 0).float().mean(dim=(1, 2, 3)).max()) >= 0.25


def test_clip_energy_weight_and_where_it_augments():
    clip = FakeClip()
    images = torch.rand(2, 3, 32, 32)
    plain = ClipEnergy(clip, "a face", copies=0, weight=600.0, augment_at="full")
    cos = clip.encode_image(images) @ clip.encode_text(["a face"])[0]
    assert torch.allclose(plain(Features(images)), 600.0 * (1 - cos), atol=1e-4)
    assert ClipEnergy(clip, "a face", copies=0).scale == clip.logit_scale
    ClipEnergy(clip, "a face", copies=2, augment_at="clip")(Features(images))
    assert clip.seen[-1] == (4, 3, 8, 8)  # resized to CLIP's 8 px, then augmented
    ClipEnergy(clip, "a face", copies=2, augment_at="full")(Features(images))
    assert clip.seen[-1] == (4, 3, 32, 32)  # augmented at the generator's 32 px
