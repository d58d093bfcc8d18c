"""``energyql check``: the two "done when" commands of the language issue, JSON, errors."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from energyql.cli import app

CARD = 'clip("a smiling man") & uniform(race x age) | then debias(clip_bias)'
runner = CliRunner()


def test_card_example_prints_two_stages():
    result = runner.invoke(app, ["check", CARD, "--gen", "stylegan2-ffhq"])
    assert result.exit_code == 0, result.output
    assert "stage 1" in result.stdout and "stage 2" in result.stdout
    assert "stage 3" not in result.stdout
    assert "debias clip_bias -> glasses, beard, makeup, blond_hair" in result.stdout
    assert "face-attributes" in result.stdout and "ViT-B-32:openai" in result.stdout


def test_unknown_attribute_exits_2_with_caret_and_suggestion():
    source = 'clip("a smiling man") & uniform(rac x age)'
    result = runner.invoke(app, ["check", source, "--gen", "stylegan2-ffhq"])
    assert result.exit_code == 2
    assert "did you mean 'race'" in result.stderr
    lines = result.stderr.splitlines()
    caret_line = next(line for line in lines if line.strip().startswith("^"))
    source_line = lines[lines.index(caret_line) - 1]
    start = caret_line.index("^")
    assert source_line[start:start + 3] == "rac" and caret_line.strip() == "^^^"
    assert "Traceback" not in result.output


def test_json_output():
    result = runner.invoke(app, ["check", CARD, "--gen", "stylegan2-ffhq", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["canonical"] == CARD
    assert len(data["stages"]) == 2 and data["catalog"] == "faces"


def test_without_gen_checks_syntax_only():
    result = runner.invoke(app, ["check", "smiling & uniform(anything)"])
    assert result.exit_code == 0
    assert "unchecked" in result.stdout
    result = runner.invoke(app, ["check", "smiling &"])
    assert result.exit_code == 2 and "expected a term after '&'" in result.stderr


def test_unknown_generator_lists_known_ones():
    result = runner.invoke(app, ["check", "smiling", "--gen", "stylegan2-ffhqq"])
    assert result.exit_code == 2
    assert "unknown generator" in result.stderr and "stylegan2-ffhq" in result.stderr


def test_check_does_not_import_torch():
    code = (
        "import sys\n"
        "import energyql, energyql.cli\n"
        "from typer.testing import CliRunner\n"
        f"result = CliRunner().invoke(energyql.cli.app, ['check', {CARD!r}, '--gen', "
        "'stylegan2-ffhq'])\n"
        "assert result.exit_code == 0, result.output\n"
        "heavy = sorted(m for m in ('torch', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy) or 'clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"
