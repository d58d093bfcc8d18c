"""``energyql gens``: the generator table and the weights status."""

import subprocess
import sys
from pathlib import Path

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


def _rows(output: str) -> dict[str, str]:
    return {line.split()[1]: line for line in output.splitlines()
            if line.startswith("│") and len(line.split()) > 1}


def test_lists_diffusion_and_biggan_with_their_weight_status(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path))
    (tmp_path / "hf" / "google--ddpm-church-256").mkdir(parents=True)
    (tmp_path / "hf" / "google--ddpm-church-256" / "model_index.json").write_text("{}")
    (tmp_path / "biggan-deep-128-pytorch_model.bin").write_bytes(b"PK\x03\x04")
    (tmp_path / "biggan-deep-128-config.json").write_text("{}")
    (tmp_path / "biggan-deep-256-pytorch_model.bin").write_bytes(b"PK\x03\x04")  # no config
    result = runner.invoke(app, ["gens", "--paths"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert "ready" in rows["ddpm-church-256"] and "missing" in rows["ddpm-celebahq-256"]
    assert "ready" in rows["biggan-deep-128"] and "missing" in rows["biggan-deep-256"]
    for name in ("ldm-celebahq-256", "biggan-deep-512", "diffusers:PATH", "biggan:PATH"):
        assert name in rows, name
    assert str(tmp_path / "hf" / "google--ddpm-celebahq-256") in result.output


def test_commands_fetch_pipelines_and_the_missing_biggan_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path))
    (tmp_path / "biggan-deep-256-pytorch_model.bin").write_bytes(b"PK\x03\x04")
    result = runner.invoke(app, ["gens", "--commands"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert (f"hf download google/ddpm-celebahq-256 --local-dir "
            f"{tmp_path / 'hf' / 'google--ddpm-celebahq-256'}") in result.output
    assert f"curl -L -o {tmp_path / 'biggan-deep-256-config.json'}" in result.output
    assert f"curl -L -o {tmp_path / 'biggan-deep-256-pytorch_model.bin'}" not in result.output


def test_lists_text_to_image_specs_and_fetches_only_their_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path))
    result = runner.invoke(app, ["gens", "--commands"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert "missing" in rows["sd-1.5"] and "faces" in rows["sd-1.5"] and "sd:PATH" in rows
    folder = tmp_path / "hf" / "stable-diffusion-v1-5--stable-diffusion-v1-5"
    command = next(line for line in result.output.splitlines()
                   if "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in line)
    assert "--include unet/diffusion_pytorch_model.safetensors" in command
    assert command.endswith(f"--local-dir {folder}")


def test_a_missing_extra_is_named(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "diffusers" else real(name, *a))
    result = runner.invoke(app, ["gens"], env={"COLUMNS": "400"})
    assert "pip install 'energyql[diffusion]'" in _rows(result.output)["ddpm-church-256"]


def test_text_to_image_rows_name_the_extra_without_transformers(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformers" else real(name, *a))
    rows = _rows(runner.invoke(app, ["gens"], env={"COLUMNS": "400"}).output)
    assert "pip install 'energyql[diffusion]'" in rows["sd-1.5"]
    assert "pip install" not in rows["ddpm-church-256"]  # diffusers alone serves those


def test_embedded_worlds_are_ready_only_with_every_weights_file(tmp_path, monkeypatch):
    import shutil

    import energyql
    from energyql.cli import gens as gens_module
    from energyql.generators.registry import resolve

    assert gens_module.weights_status(resolve("portraits"))[0] == "ready"
    assert gens_module.weights_status(resolve("shapes"))[0] == "ready"
    # a weights folder that lacks the portraits CLIP is not ready
    from energyql.worlds import World

    fake = tmp_path / "weights"
    shutil.copytree(Path(energyql.__file__).parent / "worlds" / "portraits" / "weights", fake)
    (fake / "clip.safetensors").unlink()
    monkeypatch.setattr(World, "weights_folder", property(lambda world: fake))
    assert gens_module.weights_status(resolve("portraits")) == ("missing", str(fake))
