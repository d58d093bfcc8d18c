"""Presets: every paper experiment checks against its own generator's catalog; @name expansion."""

import pytest

import energyql
from energyql import presets
from energyql.errors import UsageError
from energyql.generators import registry


@pytest.mark.parametrize("preset", presets.PRESETS, ids=lambda p: p.name)
def test_every_preset_compiles_against_its_generators_catalog(preset):
    program = energyql.compile(preset.expression, gen=preset.gen)
    assert program.to_dict()["catalog"] == registry.resolve(preset.gen).catalog
    assert preset.experiment and preset.description


def test_presets_are_at_least_ten_with_unique_names_and_cover_every_experiment_group():
    names = presets.names()
    assert len(names) >= 10 and len(set(names)) == len(names)
    groups = {p.experiment for p in presets.PRESETS}
    assert groups == {presets.CLIP_TEXT, presets.CLASSIFIER, presets.DEBIAS, presets.ITERATIVE,
                      presets.POSE, presets.TEXT_TO_IMAGE}
    # Faces and generic worlds are both exercised.
    assert {registry.resolve(p.gen).catalog for p in presets.PRESETS} >= {"faces", "generic"}


def test_iterative_preset_has_two_stages_and_debiases_clips_bias():
    program = energyql.compile(presets.get("no_makeup_then_gender_ffhq").expression,
                               gen="stylegan2-ffhq")
    stages = program.to_dict()["stages"]
    assert len(stages) == 2
    assert "debias(gender)" in str(program)  # PromptGen's second stage names gender itself


def test_expand_replaces_a_reference_and_keeps_other_expressions():
    assert presets.expand("@race_debias_ffhq", None) == ("debias(race)", "stylegan2-ffhq")
    assert presets.expand("  @race_debias_ffhq ", "stylegan2-ffhq") == ("debias(race)",
                                                                         "stylegan2-ffhq")
    assert presets.expand("smiling", None) == ("smiling", None)
    assert presets.expand("smiling", "shapes") == ("smiling", "shapes")


def test_a_text_to_image_preset_carries_its_prompt():
    preset = presets.get("doctor_fair_sd15")
    assert preset.gen == "sd-1.5" and preset.expression == "uniform(gender x race)"
    assert presets.generator_options("@doctor_fair_sd15") == {"prompt": "a photo of a doctor"}
    assert presets.generator_options("uniform(gender)") == {}
    assert preset.to_dict()["gen_options"] == {"prompt": "a photo of a doctor"}
    # Other options may be added; the preset's own may not be changed.
    assert presets.merge_options("@doctor_fair_sd15", {"steps": 10}) == {
        "prompt": "a photo of a doctor", "steps": 10}
    with pytest.raises(UsageError) as caught:
        presets.merge_options("@doctor_fair_sd15", {"prompt": "a photo of a nurse"})
    assert "sets prompt='a photo of a doctor'" in caught.value.message
    assert "--gen sd-1.5 --gen-option prompt=" in caught.value.hint


def test_expand_refuses_a_different_generator():
    with pytest.raises(UsageError) as caught:
        presets.expand("@race_debias_ffhq", "stylegan2-metfaces")
    assert "runs on 'stylegan2-ffhq'" in caught.value.message
    assert "drop --gen" in caught.value.hint


def test_unknown_preset_suggests_the_closest_name():
    with pytest.raises(UsageError) as caught:
        presets.get("race_debias_ffq")
    assert caught.value.message == "unknown preset 'race_debias_ffq'"
    assert "did you mean 'race_debias_ffhq'" in caught.value.hint


def test_to_dict_is_json_ready():
    data = presets.get("@pose_identity_ffhq").to_dict()
    assert data["configs"] == ["inverse_graphics_pose_ffhq.cfg"] and data["gen"] == "stylegan2-ffhq"


def test_docs_map_every_preset_with_its_expression():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text()
    for preset in presets.PRESETS:
        assert f"`@{preset.name}`" in doc
        assert f"`{preset.expression.replace('|', chr(92) + '|')}`" in doc
