"""``energyql presets``, ``check @name``, ``run @name`` with a conflicting --gen, unknown names."""

import json

from typer.testing import CliRunner

from energyql import presets
from energyql.cli import app

runner = CliRunner()


def test_presets_lists_every_preset():
    result = runner.invoke(app, ["presets"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in presets.names():
        assert "@" + name in result.stdout


def test_presets_json():
    result = runner.invoke(app, ["presets", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [d["name"] for d in data] == presets.names()
    assert {"expression", "gen", "experiment", "configs", "description", "note"} <= set(data[0])


def test_check_expands_a_preset_with_its_generator():
    result = runner.invoke(app, ["check", "@no_makeup_then_gender_ffhq", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["catalog"] == "faces" and len(data["stages"]) == 2
    assert data["canonical"].endswith("| then debias(gender)")


def test_check_unknown_preset_exits_2_with_suggestion():
    result = runner.invoke(app, ["check", "@race_debias_ffq"])
    assert result.exit_code == 2
    assert "unknown preset 'race_debias_ffq'" in result.stderr
    assert "did you mean 'race_debias_ffhq'" in result.stderr
    assert "Traceback" not in result.output


def test_run_refuses_a_preset_on_another_generator_before_any_work(tmp_path):
    result = runner.invoke(app, ["run", "@race_debias_ffhq", "--gen", "shapes",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "runs on 'stylegan2-ffhq', not 'shapes'" in result.stderr
    assert not (tmp_path / "out").exists()
