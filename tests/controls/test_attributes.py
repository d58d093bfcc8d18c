"""Face attributes: CLIP zero-shot prompt ensembles, FairFace output order, backend selection."""

import pytest
import torch

from energyql.catalog import FACES, GENERIC
from energyql.controls.attributes import (
    ClipZeroShotAttributes,
    FaceAttributes,
    face_attribute_backend,
    load_attribute_model,
    zero_shot_prompts,
)
from energyql.controls.clip import load_clip
from energyql.controls.faces import FAIRFACE_OUTPUTS, FairFaceClassifier, load_fairface
from energyql.errors import EnergyQLError, WeightsMissingError
from tests.controls.helpers import save_random_fairface


def test_every_face_value_has_its_own_prompts():
    for attribute in FACES.attributes:
        groups = zero_shot_prompts(attribute)
        assert len(groups) == len(attribute.values)
        assert all(len(g) >= 2 for g in groups)
        assert len({p for g in groups for p in g}) == sum(len(g) for g in groups)  # no prompt twice


def test_zero_shot_gives_normalised_log_probs_for_every_attribute(tiny_clip, monkeypatch):
    name, checkpoint, _ = tiny_clip
    monkeypatch.setenv("ENERGYQL_CLIP", f"{name}:{checkpoint}")
    monkeypatch.setenv("ENERGYQL_FACE_ATTRIBUTES", "clip")
    model = load_attribute_model(FACES)
    assert isinstance(model, ClipZeroShotAttributes) and model.notices == ()
    images = torch.rand(3, 3, 32, 32, requires_grad=True)
    out = model(images)
    assert set(out) == set(FACES.attribute_names)
    for attribute in FACES.attributes:
        assert out[attribute.name].shape == (3, len(attribute.values))
        assert torch.allclose(out[attribute.name].exp().sum(-1), torch.ones(3), atol=1e-5)
    out["race"][:, 0].sum().backward()
    assert images.grad.abs().sum() > 0


def test_zero_shot_works_with_an_ensemble(tiny_clip):
    name, checkpoint, folder = tiny_clip
    ensemble = load_clip(f"{name}:{checkpoint} + local-dir:{folder}")
    out = ClipZeroShotAttributes(ensemble, FACES, ("gender",))(torch.rand(2, 3, 32, 32))
    assert list(out) == ["gender"] and out["gender"].shape == (2, 2)


def test_generic_world_has_no_attributes():
    with pytest.raises(EnergyQLError, match="no attributes"):
        load_attribute_model(GENERIC)


@pytest.fixture(scope="module")
def fairface_file(tmp_path_factory):
    """FairFace weights whose outputs single out race 3, gender 7 and age 9 + 4."""
    bias = torch.full((18,), -5.0)
    bias[[3, 7, 9 + 4]] = 5.0
    return save_random_fairface(tmp_path_factory.mktemp("fairface") / "res34.pt", bias=bias)


def test_fairface_outputs_map_to_catalog_values(fairface_file):
    assert [n for n, _ in FAIRFACE_OUTPUTS] == ["race", "gender", "age"]
    assert sum(len(v) for _, v in FAIRFACE_OUTPUTS) == 18
    model = load_fairface(str(fairface_file))
    assert isinstance(model, FairFaceClassifier)
    logits = model(torch.rand(2, 3, 64, 64))
    winner = {k: FACES.attribute(k).values[int(v.argmax(-1)[0])] for k, v in logits.items()}
    assert winner == {"race": "east_asian", "gender": "male", "age": "age_30_39"}


def test_fairface_backend_keeps_clip_for_the_other_attributes(fairface_file, tiny_clip,
                                                                monkeypatch):
    name, checkpoint, _ = tiny_clip
    monkeypatch.setenv("ENERGYQL_CLIP", f"{name}:{checkpoint}")
    monkeypatch.setenv("ENERGYQL_FACE_ATTRIBUTES", f"fairface:{fairface_file}")
    model = load_attribute_model(FACES)
    assert isinstance(model, FaceAttributes)
    out = model(torch.rand(2, 3, 32, 32))
    assert not model._zero_shot  # CLIP not loaded until a CLIP attribute is asked for
    assert torch.allclose(out["gender"].exp().sum(-1), torch.ones(2), atol=1e-5)
    assert out["smiling"].shape == (2, 2) and model._zero_shot
    assert set(dict(out.items())) == set(FACES.attribute_names)


def test_fairface_from_an_empty_cache_offline_is_a_clear_error(offline_cache):
    with pytest.raises(WeightsMissingError, match="res34_fair_align_multi_7_20190809.pt"):
        load_attribute_model(FACES, backend="fairface")
    assert not offline_cache.exists()


def test_fairface_checkpoint_of_the_wrong_shape(tmp_path):
    from torchvision.models import resnet18
    path = tmp_path / "r18.pt"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(EnergyQLError, match="does not fit FairFace"):
        load_fairface(str(path))


@pytest.mark.parametrize("raw, parsed", [
    ("", ("auto", None)), ("auto", ("auto", None)), ("clip", ("clip", None)),
    ("fairface", ("fairface", None)),
    ("fairface:/w/ff.pt", ("fairface", "/w/ff.pt"))])
def test_backend_values(raw, parsed):
    assert face_attribute_backend(raw) == parsed


def test_unknown_backend():
    with pytest.raises(EnergyQLError, match="ENERGYQL_FACE_ATTRIBUTES"):
        face_attribute_backend("resnet")
