"""``debias(clip_bias)``: what it resolves to on shapes and faces, why, and its contracts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import energyql as eq
from energyql.catalog import FACES
from energyql.cli import app
from energyql.errors import ArgumentError, CompositionError
from energyql.lang.clip_bias import prompt_matches
from energyql.lang.graph import Restore
from energyql.worlds.shapes import CATALOG as SHAPES

CARD = 'clip("a smiling man") & uniform(race x age) | then debias(clip_bias)'

# (source, generator, restored attributes, given (as text), re-asserted constraints (as text))
RESOLVED = [
    ('clip("a blue triangle") | then debias(clip_bias)', "shapes",
     ("size",), ("color == blue", "shape == triangle"), ()),
    ('clip("two blue triangles") | then debias(clip_bias)', "shapes",
     ("size",), ("color == blue", "shape == triangle"), ()),
    ('clip("a BLUE, Triangle!") | then debias(clip_bias)', "shapes",
     ("size",), ("color == blue", "shape == triangle"), ()),
    ("color == red | then debias(clip_bias)", "shapes",
     ("shape", "size"), ("color == red",), ()),
    ("2 * red | then debias(clip_bias)", "shapes", ("shape", "size"), ("color == red",), ()),
    ("not large | then debias(clip_bias)", "shapes",
     ("shape", "color"), ("not size == large",), ()),
    ('clip("a shape") & uniform(color) | then debias(clip_bias)', "shapes",
     ("shape", "size"), (), ("uniform(color)",)),
    ('clip("a blue triangle") & debias(clip_bias)', "shapes",
     ("size",), ("color == blue", "shape == triangle"), ()),
    ("debias(clip_bias)", "shapes", ("shape", "color", "size"), (), ()),
    ("uniform(size) | then dist(size, small=0.2) | then debias(clip_bias)", "shapes",
     ("shape", "color"), (), ("dist(size, small=0.2, large=0.8)",)),
    ("uniform(size) | then uniform(size) & debias(clip_bias)", "shapes",
     ("shape", "color"), (), ()),
    (CARD, "stylegan2-ffhq", ("glasses", "beard", "makeup", "blond_hair"),
     ("smiling == yes", "gender == male"), ("uniform(race x age)",)),
    ('clip("a woman with blond hair") | then debias(clip_bias)', "faces",
     ("race", "age", "smiling", "glasses", "beard", "makeup"),
     ("gender == female", "blond_hair == yes"), ()),
    ('clip("a man without glasses") | then debias(clip_bias)', "faces",
     ("race", "age", "smiling", "beard", "makeup", "blond_hair"),
     ("gender == male", "glasses == no"), ()),
    ('clip("an east asian senior, smiling") | then debias(clip_bias)', "faces",
     ("gender", "glasses", "beard", "makeup", "blond_hair"),
     ("race == east_asian", "age == age_70_plus", "smiling == yes"), ()),
    ("smiling & gender == female & uniform(age) | then debias(clip_bias)", "faces",
     ("race", "glasses", "beard", "makeup", "blond_hair"),
     ("smiling == yes", "gender == female"), ("uniform(age)",)),
    ('clip("a face saying yes") | then debias(clip_bias)', "faces",
     FACES.attribute_names, (), ()),
]


def _restore(program) -> Restore:
    return next(t for t in program.stages[-1].terms if isinstance(t, Restore))


@pytest.mark.parametrize("source, gen, restored, given, reasserted", RESOLVED)
def test_resolution_table(source, gen, restored, given, reasserted):
    restore = _restore(eq.compile(source, gen=gen))
    assert restore.restored == restored
    assert tuple(str(t) for t in restore.given) == given
    assert tuple(str(c) for c in restore.reasserts) == reasserted
    for constraint in restore.restores:
        assert constraint.kind == "restore" and constraint.target == ()
        assert constraint.size == len(constraint.values[0]) >= 2


@pytest.mark.parametrize("source, gen, restored, given, reasserted", RESOLVED)
def test_round_trip_and_idempotent_checking(source, gen, restored, given, reasserted):
    program = eq.compile(source, gen=gen)
    assert "debias(clip_bias)" in str(program)
    again = eq.compile(str(program), gen=gen)
    assert again == program and str(again) == str(program)
    assert program.checked(program.catalog) == program
    assert eq.compile(source).checked(gen) == program


def test_combinator_twins_compare_equal():
    faces = (eq.clip("a smiling man") & eq.uniform("race", "age")).then(eq.debias("clip_bias"))
    assert faces.checked("faces") == eq.compile(CARD, gen="faces")
    # A checked first stage with an unchecked debias(clip_bias): resolved in the whole program.
    shapes = eq.compile('clip("a blue triangle")', gen="shapes").then(eq.debias("clip_bias"))
    assert _restore(shapes).restored == ("size",)
    assert shapes == eq.compile('clip("a blue triangle") | then debias(clip_bias)', gen="shapes")
    assert eq.compile('clip("a blue triangle")', gen="shapes") | eq.debias("clip_bias") == shapes


def test_the_resolution_differs_from_a_fixed_attribute():
    # Asking for a man and then debiasing gender would undo the prompt: gender is left out.
    restore = _restore(eq.compile(CARD, gen="faces"))
    assert "gender" not in restore.restored and "smiling" not in restore.restored
    assert restore != _restore(eq.compile('clip("a smiling woman") & uniform(race x age) '
                                          "| then debias(clip_bias)", gen="faces"))


@pytest.mark.parametrize("source, gen, message", [
    ('clip("a big red circle") | then debias(clip_bias)', "shapes", "nothing to restore"),
    ('clip("a blue triangle") & large | then debias(clip_bias)', "shapes", "nothing to restore"),
    ('clip("a blue triangle") | then debias(clip_bias) | then debias(clip_bias)', "shapes",
     "stage 3 has nothing to restore"),
    ('clip("a cat") | then debias(clip_bias)', "stylegan2-afhqcat", "nothing to restore"),
])
def test_nothing_left_is_a_clear_error(source, gen, message):
    with pytest.raises(CompositionError) as caught:
        eq.compile(source, gen=gen)
    error = caught.value
    assert message in error.message
    assert error.hint and ("debias(" in error.hint or "no attributes" in error.hint)
    assert error.source[error.span.start:error.span.end] == "debias(clip_bias)"


@pytest.mark.parametrize("source, message", [
    ("clip_bias", "'clip_bias' is not a term"),
    ("uniform(clip_bias)", "stands alone in debias(clip_bias)"),
    ("debias(clip_bias x size)", "stands alone in debias(clip_bias)"),
])
def test_clip_bias_elsewhere_is_refused(source, message):
    with pytest.raises(ArgumentError) as caught:
        eq.compile(source, gen="shapes")
    assert message in caught.value.message and "debias(clip_bias)" in caught.value.hint


def test_catalogs_no_longer_alias_clip_bias():
    assert SHAPES.alias("clip_bias") is None and FACES.alias("clip_bias") is None


def test_prompt_matching():
    assert prompt_matches("a smiling man", FACES) == (("smiling", "smiling", "yes"),
                                                      ("man", "gender", "male"))
    assert prompt_matches("Middle Eastern woman, no beard", FACES) == (
        ("middle eastern", "race", "middle_eastern"), ("woman", "gender", "female"),
        ("beard", "beard", "no"))
    assert prompt_matches("a big little blue", SHAPES) == (
        ("big", "size", "large"), ("little", "size", "small"), ("blue", "color", "blue"))
    assert prompt_matches("yes no maybe", FACES) == ()


def test_resolution_records_why():
    restore = _restore(eq.compile(CARD, gen="faces"))
    why = restore.resolution
    assert [(w, a, v) for _, w, a, v in why.matched] == [("smiling", "smiling", "yes"),
                                                          ("man", "gender", "male")]
    assert dict(why.asked) == {"smiling": 'clip("a smiling man") in stage 1',
                               "gender": 'clip("a smiling man") in stage 1'}
    asked = _restore(eq.compile("not glasses | then debias(clip_bias)", gen="faces"))
    assert dict(asked.resolution.asked) == {"glasses": "not glasses == yes in stage 1"}
    assert dict(why.constrained) == {"race": "uniform(race x age) in stage 1",
                                     "age": "uniform(race x age) in stage 1"}
    dropped = _restore(eq.compile("uniform(size) | then dist(size, small=0.2) | then "
                                  "debias(clip_bias)", gen="shapes")).resolution.dropped
    assert dropped == (("uniform(size) (stage 1)", "size is constrained again later"),)


def test_stage_constraints_expand_the_restore_in_place():
    stage = eq.compile(CARD, gen="faces").stages[1]
    assert [str(c) for c in stage.constraints] == [
        "restore(glasses)", "restore(beard)", "restore(makeup)", "restore(blond_hair)",
        "uniform(race x age)"]
    assert [c.size for c in stage.constraints] == [2, 2, 2, 2, 63]


runner = CliRunner()


@pytest.mark.parametrize("source, gen, resolved, why", [
    (CARD, "stylegan2-ffhq", "debias clip_bias -> glasses, beard, makeup, blond_hair",
     ['"man" in clip("a smiling man") -> gender == male',
      "race, age: constrained by uniform(race x age) in stage 1",
      "re-asserts uniform(race x age)", "p0(glasses | smiling == yes & gender == male)"]),
    ('clip("a blue triangle") | then debias(clip_bias)', "shapes", "debias clip_bias -> size",
     ['"blue" in clip("a blue triangle") -> color == blue',
      'color, shape: asked for by clip("a blue triangle") in stage 1',
      "p0(size | color == blue & shape == triangle)"]),
])
def test_check_prints_the_resolution_and_why(source, gen, resolved, why):
    result = runner.invoke(app, ["check", source, "--gen", gen], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert resolved in result.stdout
    for line in why:
        assert line in result.stdout


def test_check_json_carries_the_resolution():
    result = runner.invoke(app, ["check", CARD, "--gen", "stylegan2-ffhq", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["canonical"] == CARD
    restore = data["stages"][1]["terms"][0]
    assert restore["type"] == "restore" and restore["canonical"] == "debias(clip_bias)"
    assert restore["restored"] == ["glasses", "beard", "makeup", "blond_hair"]
    assert restore["given"] == ["smiling == yes", "gender == male"]
    assert restore["reasserted"] == ["uniform(race x age)"]
    assert restore["resolution"]["constrained"] == {"race": "uniform(race x age) in stage 1",
                                                    "age": "uniform(race x age) in stage 1"}
    assert [m["word"] for m in restore["resolution"]["matched"]] == ["smiling", "man"]
    assert restore["backed_by"] == "face-attributes"


def test_check_error_exits_2_with_hint():
    result = runner.invoke(app, ["check", 'clip("a big red circle") | then debias(clip_bias)',
                                 "--gen", "shapes"])
    assert result.exit_code == 2
    assert "nothing to restore" in result.stderr and "hint:" in result.stderr
