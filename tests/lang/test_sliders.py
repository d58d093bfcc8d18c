"""Sliders in the language: ``NAME in LOW..HIGH`` wherever a number stands (issue 24)."""

from __future__ import annotations

import pytest

import energyql as eq
from energyql.errors import ArgumentError, CompositionError, NameResolutionError
from energyql.lang.graph import Scale, Slider
from energyql.lang.render import slider_uses

ROUND_TRIPS = [
    "dist(size, small=s in 0.2..0.8) & shape == square",
    "(w in 0..3) * color == red",
    "dist(color, blue=p in 0.1..0.9)",
    "dist(color, red=q in 0.1..0.5, blue=q in 0.1..0.5)",
    "2 * (w in 0..3) * color == blue",
    '(w in 0.5..2) * clip("a blue triangle") & color == red',
    "red | then dist(color, blue=p in 0.1..0.9) & (w in 0..3) * triangle",
]


@pytest.mark.parametrize("text", ROUND_TRIPS)
def test_canonical_text_parses_back_to_an_equal_program(text):
    program = eq.compile(text, gen="shapes")
    assert program.sliders
    assert eq.compile(str(program), gen="shapes") == program


def test_a_dist_slider_sets_its_cell_and_the_rest_share_what_is_left():
    constraint = eq.compile("dist(color, blue = p in 0.1..0.9)", gen="shapes")[0].constraints[0]
    blue = constraint.cells.index(("blue",))
    for p in (0.1, 0.3, 0.9):
        target = constraint.target_at({"p": p})
        assert target[blue] == pytest.approx(p)
        assert sum(target) == pytest.approx(1.0)
        assert all(t == pytest.approx((1 - p) / 2) for i, t in enumerate(target) if i != blue)
    # The fixed target is the one at the middle, what a reader of ``target`` sees.
    assert constraint.target == pytest.approx(constraint.target_at({"p": 0.5}))


def test_a_slider_name_used_twice_is_one_value():
    program = eq.compile("let p = q in 0.1..0.4\ndist(color, red=p, blue=p)", gen="shapes")
    assert [s.name for s in program.sliders] == ["q"]
    target = program[0].constraints[0].target_at({"q": 0.4})
    assert sorted(round(t, 6) for t in target) == [0.2, 0.4, 0.4]


def test_a_weight_slider_multiplies_the_fixed_weight():
    term = eq.compile("2 * (w in 0..3) * blue", gen="shapes")[0].terms[0]
    assert isinstance(term, Scale) and term.slider == Slider("w", 0, 3)
    assert term.weight_at({"w": 1.5}) == pytest.approx(3.0)
    assert term.weight_at({"w": 0}) == 0


@pytest.mark.parametrize("text, error, message, caret", [
    ("dist(color, blue = color in 0.1..0.9)", NameResolutionError, "name of an attribute",
     "color in 0.1..0.9"),
    ("(red in 0..1) * blue", NameResolutionError, "name of a value", "red in 0..1"),
    ("dist(color, blue = p in 0.1..0.9, red = p in 0.1..0.8)", ArgumentError, "two ranges",
     "p in 0.1..0.8"),
    ("dist(size, small = s in 0.2..0.8, large=0.3)", ArgumentError, "leave a value unlisted",
     None),
    ("dist(size, small = s in 0.8..0.2)", ArgumentError, "empty range", "s in 0.8..0.2"),
    ("dist(size, small = s in 0.5..0.5)", ArgumentError, "empty range", "s in 0.5..0.5"),
    ("w in 0..1", ArgumentError, "not a term", "w in 0..1"),
    ('clip("x", augment=n in 1..4)', ArgumentError, "cannot stand here", "n in 1..4"),
    ("(w in -1..2) * red", ArgumentError, "below 0", "w in -1..2"),
    ("dist(color, blue = p in 0.1..1.5)", ArgumentError, "must lie in 0..1", "p in 0.1..1.5"),
    ("dist(color, blue = p in 0.1..0.9, red=0.5)", ArgumentError, "at their highest", None),
    ("(a in 0..1) * (b in 0..1) * red", CompositionError, "two sliders", "b in 0..1"),
])
def test_bad_sliders_are_caret_errors(text, error, message, caret):
    with pytest.raises(error) as info:
        eq.compile(text, gen="shapes")
    assert message in info.value.message
    if caret is not None:
        span = info.value.span
        assert span is not None and text[span.start:span.end] == caret


def test_the_python_api_composes_sliders_like_numbers():
    w = eq.slider("w", 0, 3)
    red = eq.attr("color", "red")
    assert str(w * red) == str(red * w) == "(w in 0..3) * color == red"
    assert str(eq.clip("a", weight=w)) == '(w in 0..3) * clip("a")'
    p = eq.dist("color", blue=eq.slider("p", 0.1, 0.9)) & eq.attr("shape", "triangle")
    assert p.checked("shapes") == eq.compile("dist(color, blue=p in 0.1..0.9) & triangle",
                                             gen="shapes")
    env = eq.compile("dist(color, blue=p)", gen="shapes", env={"p": eq.slider("p", 0.1, 0.9)})
    assert env.sliders == (Slider("p", 0.1, 0.9),)
    with pytest.raises(ArgumentError):
        eq.slider("s", 0.8, 0.2)
    with pytest.raises(ArgumentError):
        eq.dist("color", blue=eq.slider("p", 0.5, 2))
    with pytest.raises(ArgumentError):
        eq.slider("w", -1, 1) * red


def test_check_lists_each_slider_with_what_it_moves():
    program = eq.compile("dist(color, blue = p in 0.1..0.9) & (w in 0..3) * triangle",
                         gen="shapes")
    uses = slider_uses(program)
    assert uses == {"p": ["P(color = blue) in dist(color, blue=p in 0.1..0.9)"],
                    "w": ["the weight of shape == triangle"]}
    data = program.to_dict()
    assert [s["name"] for s in data["sliders"]] == ["p", "w"]
    assert data["sliders"][0]["low"] == 0.1 and data["sliders"][0]["high"] == 0.9


def test_programs_without_sliders_have_none():
    program = eq.compile("red & triangle | then uniform(size)", gen="shapes")
    assert program.sliders == ()
    assert "sliders" in program.to_dict() and program.to_dict()["sliders"] == []
    assert not program[0].is_conditional


def test_too_many_sliders_in_a_stage_are_refused_at_the_slider_past_the_bound():
    many = " & ".join(f"(w{i} in 0..1) * blue" for i in range(17))
    with pytest.raises(ArgumentError, match="17 sliders; a stage takes at most 16") as info:
        eq.compile(many, gen="shapes")
    assert many[info.value.span.start:info.value.span.end] == "w16 in 0..1"
    grid = "dist(color, blue=p in 0.1..0.5) & " + " & ".join(
        f"(w{i} in 0..1) * triangle" for i in range(5))
    with pytest.raises(ArgumentError, match="with constraints .* at most 5"):
        eq.compile(grid, gen="shapes")
    eq.compile(grid.rsplit(" & ", 1)[0], gen="shapes")  # five is fine


def test_a_stage_after_a_slider_stage_takes_the_earlier_sliders_as_its_own():
    program = eq.compile("(w in 0..1) * red | then blue | then dist(size, small=s in 0.2..0.8)",
                         gen="shapes")
    assert [s.name for s in program.stage_sliders(0)] == ["w"]
    assert [s.name for s in program.stage_sliders(1)] == ["w"]
    assert [s.name for s in program.stage_sliders(2)] == ["w", "s"]
    assert [st["context_sliders"] for st in program.to_dict()["stages"]] == \
        [["w"], ["w"], ["w", "s"]]
    assert eq.compile(str(program), gen="shapes") == program


def test_inherited_sliders_count_towards_a_later_stage_with_constraints():
    first = " & ".join(f"(w{i} in 0..1) * blue" for i in range(5))
    program = first + " | then dist(size, small=s in 0.2..0.8)"
    with pytest.raises(ArgumentError, match="takes 6 sliders .with those of the stages before "
                       "it.; a stage with constraints"):
        eq.compile(program, gen="shapes")
    eq.compile(first + " | then size == small", gen="shapes")  # no constraints: fine


def test_an_inherited_slider_may_not_share_a_later_control_parameter_name():
    text = "(yaw in 0..1) * gender == female | then pose(yaw in -30..30)"
    with pytest.raises(ArgumentError, match="takes it from an earlier stage") as info:
        eq.compile(text, gen="portraits")
    assert text[info.value.span.start:info.value.span.end] == "yaw in 0..1"
