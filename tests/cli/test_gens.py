"""``energyql gens``: the generator table and the weights status."""

import subprocess
import sys

from typer.testing import CliRunner

import energyql.cli.gens  # noqa: F401  (registers the command)
from energyql.cli.app import app

runner = CliRunner()


def test_lists_every_generator_with_weights_status(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path))
    (tmp_path / "ffhq.pt").write_bytes(b"PK\x03\x04")
    result = runner.invoke(app, ["gens", "--paths"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines()
             if line.startswith("│") and len(line.split()) > 1}
    for name in ("shapes", "stylegan2-ffhq", "stylegan2-metfaces", "stylegan2-afhqcat",
                 "stylegan2-church", "stylegan2-car", "stylegan2-landscape", "stylegan2:PATH"):
        assert name in lines, name
    assert "ready" in lines["stylegan2-ffhq"] and "1024" in lines["stylegan2-ffhq"]
    assert "missing" in lines["stylegan2-church"]
    assert "landscape.pt" in result.output  # the --paths list
    assert f"weights cache: {tmp_path}" in result.output


def test_commands_print_how_to_fetch_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path))
    result = runner.invoke(app, ["gens", "--commands"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert f"curl -L -o {tmp_path / 'metfaces.pt'}" in result.output


def test_command_module_does_not_import_torch():
    code = "import sys, energyql.cli.gens; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
