"""The Python face: compile, the combinators, the graph contract, caching, env, views."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

import energyql as eq
from energyql.catalog import FACES
from energyql.errors import (
    ArgumentError,
    CompositionError,
    NameResolutionError,
    UnknownGeneratorError,
)
from energyql.lang.graph import (
    And,
    Clip,
    Constraint,
    Control,
    Keep,
    Not,
    Or,
    Param,
    Predicate,
    Program,
    Restore,
    Scale,
    Stage,
)
from energyql.worlds.shapes import CATALOG as SHAPES

CARD = 'clip("a smiling man") & uniform(race x age) | then debias(clip_bias)'
GEN = "stylegan2-ffhq"


def test_card_example_compiles_to_the_contract_graph():
    program = eq.compile(CARD, gen=GEN)
    uniform = 1 / 63
    race_x_age = Constraint("uniform", ("race", "age"), (uniform,) * 63)
    asked = (Predicate("smiling", "yes"), Predicate("gender", "male"))
    assert program == Program((
        Stage((Clip("a smiling man"), race_x_age)),
        Stage((Restore("clip_bias", tuple(
            Constraint("restore", (a,), (), given=asked)
            for a in ("glasses", "beard", "makeup", "blond_hair")), (race_x_age,)),)),
    ), "faces")
    assert program.catalog == "faces" and program.generator == GEN
    first, second = program.stages
    assert first.constraints[0].cells[:2] == (("white", "age_0_2"), ("white", "age_3_9"))
    assert first.pointwise == (Clip("a smiling man"),)
    assert second.constraints[0].values == (("no", "yes"),)
    assert abs(sum(first.constraints[0].target) - 1) < 1e-12


def test_issue_combinator_twins_equal_parsed_programs():
    built = (eq.clip("a smiling man") & eq.uniform("race", "age")).then(eq.debias("clip_bias"))
    assert built == eq.compile(CARD)
    assert built.checked(GEN) == eq.compile(CARD, gen=GEN)
    assert (eq.clip("a smiling man") & eq.uniform("race", "age") | eq.debias("clip_bias")) \
        .checked("faces") == eq.compile(CARD, gen=GEN)
    assert 2 * eq.attr("smiling") == eq.compile("2 * smiling")
    assert eq.attr("smiling") * 2 == eq.compile("smiling * 2")
    assert ~eq.attr("glasses") == eq.compile("not glasses")
    assert eq.compile("smiling") & eq.clip("a face") == eq.compile('smiling & clip("a face")')
    assert eq.attr("gender", "female") == eq.compile("gender == female")
    assert eq.dist("size", small=0.3, large=0.7) == eq.compile("dist(size, small=0.3, large=0.7)")
    assert eq.pose(yaw=(-30, 30)) & eq.keep("identity") == \
        eq.compile("pose(yaw in -30..30) & keep(identity)")
    assert eq.attr("smiling").or_(eq.attr("glasses")) == eq.compile("smiling or glasses")
    assert eq.clip("a face", weight=2) == 2 * eq.clip("a face")


def test_graph_normalisation():
    smiling = Predicate("smiling", "yes")
    assert eq.compile("smiling", gen=GEN).stages[0].terms == (smiling,)
    assert eq.compile('clip("t", weight=2)', gen=GEN).stages[0].terms == \
        (Scale(2.0, Clip("t")),)
    assert eq.compile("man", gen=GEN).stages[0].terms == (Predicate("gender", "male"),)
    assert And((And((smiling, smiling)), smiling)).terms == (smiling,) * 3
    assert Or((smiling, Or((smiling, smiling)))).terms == (smiling,) * 3
    assert Scale(2, Scale(3, smiling)) == Scale(6.0, smiling)
    assert eq.compile('clip("t", model="ViT-L-14:openai")', gen=GEN).stages[0].terms[0].model \
        == "ViT-L-14:openai"
    control = eq.compile("pose(yaw in -30..30)", gen=GEN).stages[0].terms[0]
    assert control == Control("pose", (Param("yaw", -30.0, 30.0),))
    assert eq.compile("pose(yaw in 0..1) & keep(identity)", gen=GEN).stages[0].keeps == \
        (Keep("identity"),)
    assert str(Not(smiling)) == "not smiling == yes"


def test_spans_do_not_affect_equality_or_hash():
    a = eq.compile("smiling & glasses", gen=GEN)
    b = eq.compile("smiling   &\n glasses  # same", gen=GEN)
    assert a == b and hash(a) == hash(b)
    assert a.source != b.source
    assert {a, b} == {a}


def test_stage_helpers_for_the_trainer():
    program = eq.compile('2 * (smiling or clip("a face")) & not glasses & uniform(race) '
                         '& pose(yaw in 0..10) & keep(identity)', gen=GEN)
    stage = program.stages[0]
    assert [p.attr for p in stage.predicates] == ["smiling", "glasses"]
    assert stage.clips == (Clip("a face"),)
    assert len(stage.pointwise) == 2 and len(stage.constraints) == 1
    assert stage.is_conditional and stage.controls[0].params[0].high == 10.0
    assert program.attributes == ("smiling", "glasses", "race")
    assert not stage.pointwise[0].is_probability and stage.pointwise[1].is_probability
    assert [type(t).__name__ for t in stage.pointwise[0].walk()] == \
        ["Scale", "Or", "Predicate", "Clip"]


def test_checked_accepts_catalogs_generators_and_names():
    unchecked = eq.compile("color == red & uniform(size)")
    assert unchecked.catalog is None and not unchecked.is_checked
    by_name = unchecked.checked("shapes")
    assert by_name == unchecked.checked(SHAPES) == eq.compile("color == red & uniform(size)",
                                                              gen="shapes")
    assert by_name.checked("shapes") == by_name
    with pytest.raises(NameResolutionError):
        unchecked.checked(FACES)
    with pytest.raises(UnknownGeneratorError) as caught:
        unchecked.checked("nope")
    assert "shapes" in str(caught.value)

    class FakeGenerator:
        catalog = SHAPES
        name = "toy"

    assert eq.compile("red", gen=FakeGenerator()).generator == "toy"


def test_compile_is_cached():
    assert eq.compile(CARD, gen=GEN) is eq.compile(CARD, gen=GEN)
    assert eq.compile("smiling", env={"b": ["gender"]}) is eq.compile("smiling",
                                                                       env={"b": ["gender"]})


def test_env_bindings_and_resolution_order():
    env = {"clip_bias": ("gender", "age"), "w": 2, "face": eq.clip("a face"),
           "happy": "smiling & not glasses"}
    program = eq.compile("w * face & happy & uniform(clip_bias)", gen=GEN, env=env)
    assert str(program) == ('2 * clip("a face") & smiling == yes & not glasses == yes '
                            "& uniform(gender x age)")
    # let beats env, env beats the catalog
    assert str(eq.compile("let w = 3; w * smiling", gen=GEN, env={"w": 2})) == \
        "3 * smiling == yes"
    assert str(eq.compile("uniform(clip_bias)", gen=GEN, env={"clip_bias": ["race"]})) == \
        "uniform(race)"
    with pytest.raises(NameResolutionError) as caught:
        eq.compile("happy", gen=GEN, env={"happy": "smilng"})
    assert "env['happy']" in str(caught.value) and "smilng" in str(caught.value)
    with pytest.raises(ArgumentError):
        eq.compile("smiling", env={"not": 1})
    with pytest.raises(ArgumentError):
        eq.compile("smiling", env={"b": object()})
    with pytest.raises(ArgumentError):
        eq.compile("smiling", env=["b"])  # type: ignore[arg-type]


def test_combinator_errors():
    with pytest.raises(CompositionError):
        ~eq.uniform("race")
    with pytest.raises(CompositionError):
        2 * eq.uniform("race")
    with pytest.raises(CompositionError):
        ~eq.clip("a face")
    with pytest.raises(CompositionError):
        eq.attr("smiling").or_(eq.uniform("race"))
    with pytest.raises(CompositionError):
        eq.compile("a | then b") & eq.attr("c")
    with pytest.raises(ArgumentError):
        eq.clip("")
    with pytest.raises(ArgumentError):
        eq.attr("not a name")
    with pytest.raises(ArgumentError):
        eq.pose(yaw=(30, -30))
    with pytest.raises(ArgumentError):
        eq.dist("size", small=2)
    with pytest.raises(ArgumentError):
        -1 * eq.attr("smiling")
    with pytest.raises(TypeError):
        eq.attr("smiling") & 3
    with pytest.raises(CompositionError):
        eq.compile("red", gen="shapes") & eq.compile("smiling", gen=GEN)
    with pytest.raises(CompositionError):
        eq.keep("identity").checked(GEN)


def test_mixing_checked_and_unchecked_checks_the_other_side():
    mixed = eq.compile("smiling", gen=GEN) & eq.uniform("gender")
    assert mixed.catalog == "faces"
    assert str(mixed) == "smiling == yes & uniform(gender)"
    with pytest.raises(NameResolutionError):
        eq.compile("smiling", gen=GEN) & eq.attr("colour", "red")


def test_dist_targets():
    program = eq.compile("dist(race, white=0.3)", gen=GEN)
    target = program.stages[0].constraints[0].target
    assert target[0] == 0.3 and len(target) == 7 and abs(sum(target) - 1) < 1e-9
    assert len(set(target[1:])) == 1
    joint = eq.dist(("gender", "smiling"), {("female", "yes"): 0.5, ("man", "yes"): 0.5})
    checked = joint.checked(GEN).stages[0].constraints[0]
    assert checked.attrs == ("gender", "smiling")
    assert checked.target == (0.0, 0.5, 0.0, 0.5)
    assert str(joint.checked(GEN)) == "dist(gender x smiling, male x yes=0.5, female x yes=0.5)"


def test_views_tree_and_dict():
    program = eq.compile(CARD, gen=GEN)
    console = Console(record=True, width=120)
    console.print(program.tree())
    text = console.export_text()
    assert "stage 1" in text and "stage 2" in text
    assert "ViT-B-32:openai" in text and "face-attributes" in text
    data = program.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["canonical"] == str(program)
    assert [len(s["terms"]) for s in data["stages"]] == [2, 1]
    assert data["stages"][0]["terms"][1]["backed_by"] == "face-attributes"
    unchecked = eq.compile("smiling & pose(yaw in 0..1) & keep(identity)")
    console.print(unchecked.tree())
    assert unchecked.to_dict()["checked"] is False
    assert repr(program).startswith("Program('clip(")


def test_deep_combinator_programs_render():
    program = eq.attr("smiling")
    for _ in range(300):
        program = ~program
    console = Console(record=True, width=1400)  # wide enough for every level of the tree
    console.print(program.tree())
    lines = console.export_text().splitlines()
    assert lines[0] == "program " + "not " * 300 + "smiling"
    nots = [line.strip() for line in lines if line.strip().startswith("└── not ")]
    assert len(nots) == 300 and set(nots) == {"└── not  −log(1 − p)"}
    assert lines[-1].strip() == "└── name smiling  [unchecked]"
    assert lines[-1].index("└──") == lines[-2].index("└──") + 4  # one level below the last not
