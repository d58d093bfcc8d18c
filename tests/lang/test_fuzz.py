"""Fuzzing: random text, random token soups and mutated valid programs (11,000 inputs).

For every input, ``compile`` either returns a program whose canonical text parses back to an
equal program, or raises an ``EnergyQLError``; nothing else escapes and nothing hangs.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import energyql as eq
from energyql.errors import EnergyQLError, ExpressionError
from tests.lang.test_grammar import VALID

GENS = st.sampled_from([None, "stylegan2-ffhq", "shapes"])
FUZZ = settings(max_examples=3000, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

ALPHABET = ('abcdeghilmnoprstuwxyz_ABCXYZ0123456789 \t\n&|*()=!.,;#"\\-+\'$[]{}<>:?/'
            "éß\x00\u200b")
TOKENS = [
    "clip(", "uniform(", "debias(", "dist(", "pose(", "keep(", "let", "then", "|", "&", "or",
    "not", "x", "in", "..", "*", "(", ")", ",", "=", "==", "!=", ";", "\n", "#c\n", '"a face"',
    '"', "'", "\\", "smiling", "glasses", "race", "age", "gender", "female", "man", "yes",
    "clip_bias", "identity", "yaw", "pitch", "color", "red", "size", "big", "shape", "rac", "2",
    "0.5", "-30", "30", "1e999", "-0", "weight=", "model=", '"m"', "augment=", "b", "w",
    "age_20_29", "x=0.3", "let b =", "let w = 2;",
]
SEEDS = [source for source, _gen, _canonical in VALID] + [
    "pose(yaw in -30..30) & keep(identity) | then uniform(race x gender)",
    'let face = clip("a face")\nface & not glasses | then dist(gender, female=0.5)',
]


def check_one(source: str, gen: str | None) -> None:
    """The fuzz property: only EnergyQLError escapes, and success round-trips."""
    try:
        program = eq.compile(source, gen=gen)
    except ExpressionError as error:
        str(error)  # the message itself must render
        return
    except EnergyQLError:
        return
    canonical = str(program)
    assert eq.compile(canonical, gen=gen) == program, (source, canonical)


@pytest.mark.timeout(300)
@FUZZ
@given(st.text(alphabet=ALPHABET, max_size=40), GENS)
def test_random_text(source, gen):
    check_one(source, gen)


@pytest.mark.timeout(300)
@settings(FUZZ, max_examples=1000)
@given(st.text(max_size=30), GENS)
def test_random_unicode(source, gen):
    check_one(source, gen)


@pytest.mark.timeout(300)
@settings(FUZZ, max_examples=3500)
@given(st.lists(st.sampled_from(TOKENS), max_size=14), st.sampled_from([" ", ""]), GENS)
def test_token_soup(tokens, sep, gen):
    check_one(sep.join(tokens), gen)


@st.composite
def mutated(draw):
    source = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 3))):
        n = len(source)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 6)))
        op = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "swap"]))
        token = draw(st.sampled_from(TOKENS + list("()&|*,=\" ")))
        if op == "delete":
            source = source[:i] + source[j:]
        elif op == "insert":
            source = source[:i] + token + source[i:]
        elif op == "replace":
            source = source[:i] + token + source[j:]
        elif op == "duplicate":
            source = source[:j] + source[i:j] + source[j:]
        else:
            k = draw(st.integers(0, n))
            source = source[:i] + source[k:k + (j - i)] + source[j:]
    return source


@pytest.mark.timeout(300)
@settings(FUZZ, max_examples=3500)
@given(mutated(), GENS)
def test_mutated_valid_programs(source, gen):
    check_one(source, gen)


@pytest.mark.parametrize("source", [
    "(" * 5000 + "smiling" + ")" * 5000,
    "(" * 5000,
    "not " * 5000 + "smiling",
    "clip(" * 2000,
    "uniform(" * 2000 + "race" + ")" * 2000,
    " & ".join(["smiling"] * 5000),
    " or ".join(["smiling"] * 5000),
    " | then ".join(["smiling"] * 2000),
    "2 * " * 3000 + "smiling",
    "let a = smiling\n" * 3 + "a",
    '"' * 10000,
    "#" * 10000,
    "\\" * 1000,
    "1" * 5000 + " * smiling",
    'clip("' + "x" * 100000 + '")',
])
def test_pathological_inputs_give_clean_errors(source):
    check_one(source, "stylegan2-ffhq")
