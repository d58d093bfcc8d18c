"""Every example in docs/language.md runs: `energyql` blocks compile (against the faces
generator unless a first line says `# gen: NAME`), `python` blocks execute, and `console`
blocks run through the CLI with the exit code and output the block shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

import energyql as eq
from energyql.cli import app

DOC = Path(__file__).resolve().parents[2] / "docs" / "language.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(DOC.read_text(encoding="utf-8")) if lang == kind]


def test_the_doc_has_examples():
    assert len(blocks("energyql")) >= 10 and blocks("python") and len(blocks("console")) >= 2


@pytest.mark.parametrize("source", blocks("energyql"))
def test_expression_examples_compile_and_round_trip(source):
    match = re.match(r"# gen: (\S+)\n", source)
    gen = match.group(1) if match else "stylegan2-ffhq"
    program = eq.compile(source, gen=gen)
    assert eq.compile(str(program), gen=gen) == program


@pytest.mark.parametrize("code", blocks("python"))
def test_python_examples_run(code):
    exec(compile(code, str(DOC), "exec"), {})


@pytest.mark.parametrize("session", blocks("console"))
def test_console_examples_run(session):
    command, *shown = session.rstrip("\n").split("\n")
    assert command.startswith("$ energyql ")
    args = shlex.split(command[len("$ energyql "):])
    result = CliRunner().invoke(app, args)
    failing = bool(shown) and shown[0].startswith("error:")
    assert result.exit_code == (2 if failing else 0), result.output
    output = result.stderr if failing else result.stdout
    assert [line.rstrip() for line in output.splitlines()] == [line.rstrip() for line in shown] \
        or not shown
