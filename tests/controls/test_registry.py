"""The control-model registry: catalog keys -> loaders; a new world plugs in with data only."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import energyql as eq
from energyql.catalog import (
    CATALOGS,
    Attribute,
    Catalog,
    ClipSettings,
    Control,
    Parameter,
)
from energyql.controls import registry
from energyql.energies import ControlModels, lower_stage
from energyql.energies.base import Features
from energyql.energies.clip import ClipEnergy
from energyql.energies.conditional import KeepEnergy, PoseEnergy
from energyql.errors import EnergyQLError

# --- a fake "portraits" world: four models, each a few lines, loaded only through the registry --


class FakeClassifier(torch.nn.Module):
    """smiling: p(yes) = mean brightness; age (young, old): from the red channel."""

    def forward(self, images):
        bright = images.mean(dim=(1, 2, 3)).clamp(0.01, 0.99)
        red = images[:, 0].mean(dim=(1, 2)).clamp(0.01, 0.99)
        return {"smiling": torch.stack([1 - bright, bright], -1).log(),
                "age": torch.stack([1 - red, red], -1).log()}


class FakePose(torch.nn.Module):
    def forward(self, images):
        return {"yaw": images[:, 1].mean(dim=(1, 2)) * 90 - 45}


class FakeIdentity(torch.nn.Module):
    def forward(self, images):
        return F.normalize(F.adaptive_avg_pool2d(images, 2).flatten(1), dim=-1)


class FakeClip(torch.nn.Module):
    """A CLIP-shaped model: pooled colours as image embeddings, a fixed vector per text."""

    image_size = 8
    logit_scale = 50.0

    def __init__(self):
        super().__init__()
        self.augment_options: dict = {}
        self.seen: list[tuple[int, ...]] = []

    def encode_image(self, images):
        self.seen.append(tuple(images.shape))
        return F.normalize(F.adaptive_avg_pool2d(images, 2).flatten(1), dim=-1)

    def encode_text(self, texts):
        return torch.stack([F.normalize(torch.arange(1.0, 13.0) ** (len(t) % 3), dim=0)
                            for t in texts])


def load_classifier(catalog, *, device="cpu"):
    return FakeClassifier()


def load_pose(device="cpu"):
    return FakePose()


def load_identity(device="cpu"):
    return FakeIdentity()


def load_clip(device="cpu"):
    return FakeClip()


PORTRAITS = Catalog(
    name="portraits",
    attributes=(Attribute("smiling", ("no", "yes"), "portraits-classifier", binary=True),
                Attribute("age", ("young", "old"), "portraits-classifier")),
    controls=(Control("pose", (Parameter("yaw", -45.0, 45.0, "degrees"),),
                      model="portraits-pose"),),
    keepables=(("identity", "portraits-identity"),),
    clip_model="portraits-clip",
    clip=ClipSettings(weight=250.0, copies=3, augment=(("translate", 0.1), ("cutout", 0.25)),
                      augment_at="full"),
)


@pytest.fixture
def portraits(monkeypatch):
    """The portraits world's models in the registry (removed again after the test)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    here = __name__
    registry.register("portraits-classifier", f"{here}:load_classifier", kind="attributes")
    registry.register("portraits-pose", f"{here}:load_pose", kind="pose")
    registry.register("portraits-identity", f"{here}:load_identity", kind="identity")
    registry.register("portraits-clip", f"{here}:load_clip", kind="clip")
    monkeypatch.delenv("ENERGYQL_CLIP", raising=False)
    return PORTRAITS


def test_a_new_world_plugs_in_with_catalog_data_and_registry_entries(portraits):
    models = ControlModels(portraits)
    stage = eq.compile('clip("a portrait") & smiling & uniform(age)').checked(portraits).stages[0]
    energy = lower_stage(stage, models)
    clip = energy.pointwise[0]
    assert isinstance(clip, ClipEnergy) and isinstance(clip.clip, FakeClip)
    assert (clip.prompt, clip.text) == ("a portrait", 'clip("a portrait")')
    assert (clip.scale, clip.copies, clip.augment_at) == (250.0, 3, "full")
    assert isinstance(energy.attribute_model, FakeClassifier)
    images = torch.rand(2, 3, 16, 16)
    total, parts = energy(images, torch.Generator().manual_seed(0))
    assert list(parts) == ['clip("a portrait")', "smiling == yes", "uniform(age)"]
    bright = images.mean(dim=(1, 2, 3))
    assert torch.allclose(parts["smiling == yes"], -bright.log(), atol=1e-5)
    # "full": CLIP saw 3 augmented copies at the images' own 16 px.
    assert clip.clip.seen[-1] == (6, 3, 16, 16)
    assert torch.isfinite(total).all()


def test_a_new_world_conditional_stage_uses_its_pose_and_identity_models(portraits):
    models = ControlModels(portraits)
    stage = eq.compile("pose(yaw in -20..20) & keep(identity)").checked(portraits).stages[0]
    energy = lower_stage(stage, models)
    pose, keep = energy.pointwise
    assert isinstance(pose, PoseEnergy) and isinstance(pose.pose_model, FakePose)
    assert isinstance(keep, KeepEnergy) and isinstance(keep.embedder, FakeIdentity)
    assert energy.paired and [p.name for p in energy.context] == ["yaw"]
    images = torch.full((1, 3, 8, 8), 0.5)  # green 0.5 reads as yaw 0
    features = Features(images, context=torch.tensor([[0.0]]), reference_images=images.clone())
    assert pose(features).abs().max() < 1e-5 and keep(features).abs().max() < 1e-5
    assert models.pose(portraits.control("pose")) is pose.pose_model  # loaded once


def test_every_model_a_builtin_catalog_names_is_registered_with_its_kind():
    for catalog in CATALOGS.values():
        for attribute in catalog.attributes:
            assert registry.is_registered(attribute.model, kind="attributes"), attribute.model
        for control in catalog.controls:
            assert registry.is_registered(control.model, kind="pose"), control.model
        for _, key in catalog.keepables:
            assert registry.is_registered(key, kind="identity"), key


def test_unknown_key_fails_with_did_you_mean():
    with pytest.raises(EnergyQLError, match="unknown identity model 'fcenet'") as info:
        registry.load("fcenet", kind="identity")
    assert info.value.hint.startswith("did you mean 'facenet'?")
    with pytest.raises(EnergyQLError, match="unknown control model kind 'poses'"):
        registry.register("x", "m:f", kind="poses")
    with pytest.raises(EnergyQLError, match="not 'module:function'"):
        registry.register("x", "just_a_module", kind="pose")


def test_the_registry_and_the_catalog_import_no_torch():
    code = ("import sys, energyql.controls.registry, energyql.catalog, energyql.workflow; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_clip_key_registered_again_loads_its_new_model(monkeypatch):
    from energyql.controls.clip import load_clip

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("swap-clip", f"{__name__}:load_clip", kind="clip")
    first = load_clip("swap-clip")
    assert isinstance(first, FakeClip) and load_clip("swap-clip") is first  # cached
    registry.register("swap-clip", "energyql.worlds.shapes.clip:load_control", kind="clip")
    assert not isinstance(load_clip("swap-clip"), FakeClip)
