"""Constraint kinds are one table; "is it a probability" and "which attributes" are one pass
each."""

import pytest

import energyql as eq
from energyql.errors import CompositionError
from energyql.lang import graph as g
from energyql.worlds.shapes import CATALOG as SHAPES


def _constraints(source):
    return [c for stage in eq.compile(source).checked(SHAPES).stages for c in stage.constraints]


def test_every_constraint_kind_has_one_entry_with_its_target_rule():
    assert set(g.KINDS) == {"uniform", "debias", "dist", "restore"}
    assert g.CONSTRAINT_KINDS == ("uniform", "debias", "dist")
    uniform, dist = _constraints("uniform(shape x color) & dist(size, small=0.2)")
    assert uniform.rule is g.UNIFORM and uniform.target == (1 / 9,) * 9
    assert dist.rule is g.DIST and dist.target == (0.2, 0.8)
    restore = _constraints("color == red | then debias(clip_bias)")[0]
    assert restore.rule is g.RESTORE_KIND and restore.deferred and not uniform.deferred


def test_metric_keys_come_from_the_table():
    uniform, dist = _constraints("uniform(shape x color) & dist(size, small=0.2)")
    assert uniform.metric_key == "shape x color"
    assert dist.metric_key == str(dist) == "dist(size, small=0.2, large=0.8)"
    restore = _constraints("color == red | then debias(clip_bias)")[0]
    assert restore.metric_key == str(restore) == "restore(shape)"


def test_an_unknown_kind_is_refused_when_built():
    with pytest.raises(CompositionError, match="unknown constraint kind 'unifrom'"):
        g.Constraint("unifrom", ("shape",))


def test_check_json_says_what_each_target_is():
    data = eq.compile("uniform(shape) & dist(size, small=0.2)").checked(SHAPES).to_dict()
    labels = [t["target_is"] for t in data["stages"][0]["terms"]]
    assert labels == [g.UNIFORM.label, g.DIST.label]


@pytest.mark.parametrize("source, expected", [
    ("color == red", True),
    ("not color == red", True),
    ("color == red & not (shape == circle or size == small)", True),
    ('color == red & clip("x")', False),
    ("2 * color == red", False),
    ("uniform(color)", False),
])
def test_one_is_probability_pass(source, expected):
    program = eq.compile(source)  # unchecked: `not clip(...)` is refused only by checking
    term = g.And(program.stages[0].terms) if len(program.stages[0].terms) > 1 \
        else program.stages[0].terms[0]
    assert g.is_probability(term) is expected
    assert term.is_probability is expected


def test_not_of_an_energy_is_no_probability():
    # The two passes this one replaces disagreed here (the language refuses it when parsing).
    term = g.Not(g.Clip("a red circle"))
    assert g.is_probability(term) is False and term.is_probability is False


def test_lowering_uses_the_same_is_probability():
    from energyql.energies import lower

    assert lower.is_probability is g.is_probability


def test_one_attributes_pass_for_programs_lowering_and_drift():
    program = eq.compile("color == red & not size == small | then debias(clip_bias)")
    checked = program.checked(SHAPES)
    assert checked.attributes == ("color", "size", "shape")  # the restore's too
    assert g.attributes_of(checked.stages[0].terms[1]) == ("size",)
    assert g.attributes_of(g.Scale(2.0, g.Predicate("shape", "circle"))) == ("shape",)
