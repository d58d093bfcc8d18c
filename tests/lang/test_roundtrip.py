"""Property tests: random valid programs, written as text and built with combinators.

For each: the parsed program equals its combinator twin (checked and unchecked), and its
canonical text parses back to an equal program with the same text.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import energyql as eq
from energyql.catalog import FACES
from energyql.lang.graph import quote

GEN = "stylegan2-ffhq"
SETTINGS = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))

BINARY = [a.name for a in FACES.attributes if a.binary]
_OWNERS: dict[str, list[str]] = {}
for _attribute in FACES.attributes:
    for _spelling in list(_attribute.values) + [a for a, _ in _attribute.value_aliases]:
        _OWNERS.setdefault(_spelling, []).append(_attribute.name)
UNIQUE_VALUES = sorted(v for v, owners in _OWNERS.items() if len(owners) == 1)
WEIGHTS = [0.25, 0.5, 1.5, 2, 3, 10]
PROMPT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(
    lambda t: t.strip())


def paren(text: str) -> str:
    return f"({text})"


@st.composite
def predicate(draw):
    kind = draw(st.sampled_from(["bare", "eq", "ne", "value"]))
    if kind == "bare":
        name = draw(st.sampled_from(BINARY))
        return name, eq.attr(name)
    if kind == "value":
        value = draw(st.sampled_from(UNIQUE_VALUES))
        return value, eq.attr(value)
    attribute = draw(st.sampled_from(FACES.attributes))
    value = draw(st.sampled_from(list(attribute.values) + [a for a, _ in attribute.value_aliases]))
    if kind == "eq":
        return f"{attribute.name} == {value}", eq.attr(attribute.name, value)
    return f"{attribute.name} != {value}", ~eq.attr(attribute.name, value)


def _and(items):
    text = " & ".join(paren(t) for t, _ in items)
    program = items[0][1]
    for _, other in items[1:]:
        program = program & other
    return text, program


def _or(items):
    text = " or ".join(paren(t) for t, _ in items)
    program = items[0][1]
    for _, other in items[1:]:
        program = program.or_(other)
    return text, program


probability = st.recursive(
    predicate(),
    lambda kids: st.one_of(
        kids.map(lambda k: (f"not {paren(k[0])}", ~k[1])),
        st.lists(kids, min_size=2, max_size=3).map(_and),
        st.lists(kids, min_size=2, max_size=3).map(_or),
    ),
    max_leaves=5,
)


@st.composite
def clip_term(draw):
    text = draw(PROMPT)
    weight = draw(st.sampled_from([None, 2, 0.5]))
    augment = draw(st.sampled_from([None, 4]))
    options = "".join(f", {k}={v}" for k, v in (("weight", weight), ("augment", augment))
                      if v is not None)
    return f"clip({quote(text)}{options})", eq.clip(text, weight=weight, augment=augment)


def _scaled(pair, weight):
    return f"{weight} * {paren(pair[0])}", weight * pair[1]


pointwise = st.recursive(
    st.one_of(probability, clip_term()),
    lambda kids: st.one_of(
        st.tuples(kids, st.sampled_from(WEIGHTS)).map(lambda kw: _scaled(*kw)),
        st.lists(kids, min_size=2, max_size=3).map(_and),
        st.lists(kids, min_size=2, max_size=3).map(_or),
    ),
    max_leaves=4,
)

CONSTRAINABLE = ["race", "age", "gender", "smiling", "glasses"]


@st.composite
def constraints(draw):
    chosen = draw(st.lists(st.sampled_from(CONSTRAINABLE), unique=True, max_size=3))
    groups, out = [], []
    while chosen:
        size = draw(st.integers(1, min(2, len(chosen))))
        groups.append(chosen[:size])
        chosen = chosen[size:]
    for group in groups:
        kind = draw(st.sampled_from(["uniform", "debias", "dist"]))
        if kind != "dist":
            maker = eq.uniform if kind == "uniform" else eq.debias
            out.append((f"{kind}({' x '.join(group)})", maker(*group)))
            continue
        cells = list(itertools.product(*(FACES.attribute(a).values for a in group)))
        picked = draw(st.lists(st.sampled_from(cells), unique=True, min_size=1,
                               max_size=min(3, len(cells) - 1)))
        shares = [draw(st.sampled_from([0.05, 0.1, 0.2, 0.25])) for _ in picked]
        entries = {cell: share for cell, share in zip(picked, shares)}
        text = ", ".join(f"{' x '.join(c)}={p}" for c, p in entries.items())
        out.append((f"dist({' x '.join(group)}, {text})", eq.dist(tuple(group), entries)))
    return out


@st.composite
def stage(draw):
    items = draw(st.lists(pointwise, min_size=0, max_size=2)) + draw(constraints())
    if draw(st.booleans()):
        low = draw(st.sampled_from([-45, -30, -10.5]))
        items.append((f"pose(yaw in {low}..30)", eq.pose(yaw=(low, 30))))
        if draw(st.booleans()):
            items.append(("keep(identity)", eq.keep("identity")))
    if not items:
        items.append(draw(pointwise))
    return _and(items) if len(items) > 1 else items[0]


@st.composite
def program(draw):
    stages = draw(st.lists(stage(), min_size=1, max_size=3))
    text = stages[0][0]
    built = stages[0][1]
    for source, other in stages[1:]:
        text += draw(st.sampled_from([" | then ", "\nthen ", " then "])) + source
        built = built.then(other)
    if draw(st.booleans()):  # route the first stage through a let binding
        text = f"let first = ({stages[0][0]})\nfirst" + text[len(stages[0][0]):]
    return text, built


@SETTINGS
@given(program())
def test_parsed_program_equals_combinator_twin_and_round_trips(case):
    text, built = case
    unchecked = eq.compile(text)
    assert unchecked == built
    checked = eq.compile(text, gen=GEN)
    assert checked == built.checked(GEN)
    assert checked == unchecked.checked(GEN)
    assert hash(checked) == hash(built.checked("faces"))
    canonical = str(checked)
    again = eq.compile(canonical, gen=GEN)
    assert again == checked and str(again) == canonical
    assert eq.compile(str(unchecked)) == unchecked
    assert checked.to_dict()["canonical"] == canonical
