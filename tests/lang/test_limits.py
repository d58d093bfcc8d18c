"""Hostile expressions: bounded work, escaped echoes, named mistakes (issue 18)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import energyql
from energyql.errors import ExpressionError, NameResolutionError, Span, caret_excerpt
from energyql.lang.bind import MAX_TERMS


def doubling_bomb(lines: int, step: str = "(a{p} & a{p})") -> str:
    """Return a program whose let lines each use the previous binding twice."""
    body = ["let a0 = smiling"] + [f"let a{i} = " + step.format(p=i - 1) for i in range(1, lines)]
    return "\n".join(body) + f"\na{lines - 1}"


def run_limited(code: str, megabytes: int = 1024) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose address space is capped (a bomb fails there)."""
    prelude = textwrap.dedent(f"""
        import resource
        limit = {megabytes} * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("step", ["(a{p} & a{p})", "(a{p} or not a{p})", "(2 * a{p} & a{p})"])
def test_doubling_let_lines_fail_fast_under_a_memory_cap(step):
    source = doubling_bomb(40, step)
    assert len(source.encode()) < 1200
    out = run_limited(f"""
        import energyql
        from energyql.errors import ExpressionError
        try:
            energyql.compile({source!r}, gen="shapes")
        except ExpressionError as error:
            print(error.message)
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "expression too large" in out.stdout
    assert f"{MAX_TERMS:,} terms" in out.stdout


def test_size_error_points_at_the_binding_that_crosses_the_limit():
    with pytest.raises(ExpressionError, match="expression too large") as info:
        energyql.compile(doubling_bomb(40))
    error = info.value
    line = error.source[:error.span.start].count("\n")
    # a_k holds 2**k predicates; the first k with 2**k + (2**k - 1) nodes over the limit.
    assert error.source.splitlines()[line].startswith("let a13 =")
    assert "let binding" in error.hint


def test_programs_just_under_the_limit_still_compile():
    program = energyql.compile(doubling_bomb(10))
    assert len(program.stages[0].terms) == 2 ** 9


def test_stage_sizes_add_up_across_then():
    lines = ["let a0 = smiling"] + [f"let a{i} = (a{i - 1} & a{i - 1})" for i in range(1, 12)]
    source = "\n".join(lines) + "\n" + " | then ".join(["a11"] * 5)
    with pytest.raises(ExpressionError, match="expression too large"):
        energyql.compile(source)


@pytest.mark.parametrize("hostile, shown", [
    ("\x1b[31m", "\\x1b[31m"), ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"), ("\t", "\\t"),
    ("\x00", "\\x00"), ("\u202e", "\\u202e"), ("\r", "\\r"),
])
def test_control_characters_are_escaped_and_the_caret_stays_aligned(hostile, shown):
    source = f'clip("a {hostile}face") & smilin'
    with pytest.raises(ExpressionError) as info:
        energyql.compile(source, gen="shapes")
    text = str(info.value)
    assert hostile not in text
    line, carets = text.splitlines()[1:3]
    assert shown in line
    column = carets.index("^")
    assert line[column:column + len("smilin")] == "smilin"
    assert carets.count("^") == len("smilin")


def test_caret_covers_an_escaped_span_with_its_escaped_width():
    source = "a \x1b[2J b"
    excerpt = caret_excerpt(source, Span(2, 6))
    line, carets = excerpt.splitlines()
    assert line == "  a \\x1b[2J b"
    assert carets == "    " + "^" * len("\\x1b[2J")


def test_messages_and_hints_are_escaped_too():
    error = NameResolutionError("unknown name 'a\x1bb'", hint="try \x1b[1mthis")
    assert "\x1b" not in str(error)
    assert "'a\\x1bb'" in str(error)


@pytest.mark.parametrize("source, function, close", [
    ("foo(big)", "foo", None), ("clpi(big)", "clpi", "clip"), ("unifrom(size)", "unifrom",
                                                                   "uniform"),
])
def test_unknown_function_is_named(source, function, close):
    with pytest.raises(NameResolutionError, match=f"unknown function '{function}'") as info:
        energyql.compile(source, gen="shapes")
    assert info.value.span == Span(0, len(function))
    assert "functions: clip, uniform" in info.value.hint
    if close:
        assert f"did you mean '{close}'?" in info.value.hint


def test_a_known_control_with_a_plain_argument_asks_for_ranges():
    with pytest.raises(ExpressionError, match="a control takes parameter ranges"):
        energyql.compile("pose(big)")
