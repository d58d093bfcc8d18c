"""Faithful judges: FairFace by default where present, a notice without it, a CelebA classifier."""

import shutil
import warnings

import pytest
import torch

import energyql as eq
from energyql import hub
from energyql.catalog import FACES
from energyql.controls.attributes import (
    ClipZeroShotAttributes,
    FaceAttributes,
    MergedAttributes,
    load_attribute_model,
)
from energyql.controls.celeba import (
    ENERGY_WEIGHT,
    BinaryAttributeClassifier,
    build_backbone,
)
from energyql.energies import ControlModels, lower_stage
from energyql.energies.combinators import ScaledEnergy
from energyql.errors import EnergyQLError
from tests.controls.helpers import save_random_fairface


@pytest.fixture
def tiny_clip_env(tiny_clip, offline_cache, monkeypatch):
    name, checkpoint, _ = tiny_clip
    monkeypatch.setenv("ENERGYQL_CLIP", f"{name}:{checkpoint}")
    return offline_cache


@pytest.fixture(scope="module")
def fairface_file(tmp_path_factory):
    return save_random_fairface(tmp_path_factory.mktemp("fairface") / "res34.pt")


def test_fairface_is_the_default_judge_where_its_weights_are_present(tiny_clip_env, fairface_file):
    target = hub.location("fairface-res34")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(fairface_file, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no notice when FairFace is there
        model = load_attribute_model(FACES)
    assert isinstance(model, FaceAttributes) and model.notices == ()
    from energyql.training import controls_record

    record = controls_record(ControlModels(FACES, attributes=model))
    assert record["face_attributes"] == "fairface" and "notices" not in record


def test_without_fairface_clip_judges_with_a_notice_that_reaches_the_models(tiny_clip_env):
    models = ControlModels(FACES)
    with pytest.warns(UserWarning, match="FairFace weights are not in the cache") as caught:
        attributes = models.attributes
    assert isinstance(attributes, ClipZeroShotAttributes) and len(caught) == 1
    (notice,) = models.notices
    assert "CLIP zero-shot" in notice and "res34_fair_align_multi_7_20190809.pt" in notice
    assert "\n" not in notice  # one line
    from energyql.training import controls_record

    record = controls_record(models)  # what the manifest's controls record says
    assert record["face_attributes"] == "clip" and record["notices"] == [notice]


def save_random_celeba(path, heads=("Smiling", "Eyeglasses", "No_Beard"), seed=0):
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    backbone, width = build_backbone()
    model = BinaryAttributeClassifier(backbone, width, heads)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def celeba_file(tmp_path_factory):
    return save_random_celeba(tmp_path_factory.mktemp("celeba") / "celeba.safetensors")


def test_celeba_classifier_gives_binary_log_probs_and_negates_no_beard(celeba_file):
    from energyql.controls.celeba import load_celeba_classifier

    model = load_celeba_classifier(celeba_file)
    assert set(model.names) == {"smiling", "glasses", "beard"}
    out = model(torch.rand(2, 3, 64, 64))
    for name in model.names:
        assert out[name].shape == (2, 2)
        assert torch.allclose(out[name].exp().sum(-1), torch.ones(2), atol=1e-5)
    features = model.backbone((torch.nn.functional.interpolate(
        torch.zeros(1, 3, 224, 224), size=(224, 224)) - model.mean) / model.std)
    no_beard = torch.sigmoid(model.heads["No_Beard"](features))[0, 0]
    beard_yes = model(torch.zeros(1, 3, 224, 224))["beard"][0, 1].exp()
    assert torch.allclose(beard_yes, 1 - no_beard, atol=1e-5)


def test_celeba_option_judges_binary_attributes_with_promptgens_weight(celeba_file, tiny_clip_env,
                                                                      monkeypatch):
    monkeypatch.setenv("ENERGYQL_FACE_ATTRIBUTES", "clip")
    monkeypatch.setenv("ENERGYQL_CELEBA_CLASSIFIER", str(celeba_file))
    models = ControlModels(FACES)
    stage = eq.compile("smiling", gen="faces").stages[0]
    energy = lower_stage(stage, models)
    assert isinstance(models.attributes, MergedAttributes)
    (term,) = energy.pointwise
    assert isinstance(term, ScaledEnergy) and term.text == "smiling == yes"
    images = torch.rand(2, 3, 32, 32)
    _, parts = energy(images)
    p_smiling = models.attributes.models[0](images)["smiling"][:, 1].exp()
    assert torch.allclose(parts["smiling == yes"], ENERGY_WEIGHT * -p_smiling.log(), rtol=1e-4)
    # Attributes the classifier has no head for stay with CLIP zero-shot, at weight 1.
    race = lower_stage(eq.compile("race == white", gen="faces").stages[0], models).pointwise[0]
    assert not isinstance(race, ScaledEnergy)


def test_celeba_head_that_the_world_lacks_is_refused(tmp_path, monkeypatch):
    from energyql.controls.celeba import load_celeba_attributes

    path = save_random_celeba(tmp_path / "odd.safetensors", heads=("Wavy_Hair",))
    with pytest.raises(EnergyQLError, match="head 'Wavy_Hair' is not a binary attribute") as info:
        load_celeba_attributes(FACES, path=path)
    assert "smiling" in info.value.hint
    monkeypatch.delenv("ENERGYQL_CELEBA_CLASSIFIER", raising=False)
    with pytest.raises(EnergyQLError, match="no CelebA attribute classifier"):
        load_celeba_attributes(FACES)
