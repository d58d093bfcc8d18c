"""The judges' CLIP and face-attribute backend are parameters of ControlModels (and of
energyql.train / evaluate / the CLI), recorded in the manifest from the object; the environment
variables are only defaults read once when the set is built."""

import json
import os

import pytest
from typer.testing import CliRunner

import energyql as eq
from energyql.catalog import CATALOGS
from energyql.cli import app
from energyql.controls.clip import load_clip
from energyql.energies import ControlModels
from energyql.errors import EnergyQLError
from energyql.training import controls_record
from tests.toys import register_tiny

SHAPES, FACES = CATALOGS["shapes"], CATALOGS["faces"]
SPEC = "2*shapes-clip"  # a one-member ensemble of the shapes CLIP: not the world's default
TINY = dict(steps=2, batch=4, blocks=2, width=8, clip_copies=1, moment_samples=32,
            refit_every=0, warm_start_samples=0, threads=1)


@pytest.fixture
def no_env(monkeypatch):
    for name in ("ENERGYQL_CLIP", "ENERGYQL_FACE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)


def test_parameters_reach_the_models_and_the_record(no_env):
    models = ControlModels(SHAPES, clip=SPEC)
    assert models.clip_spec == SPEC and models.clip(None).name == load_clip(SPEC).name == SPEC
    assert controls_record(models)["clip"] == SPEC
    faces = ControlModels(FACES, clip=SPEC, face_attributes="clip")
    record = controls_record(faces)
    assert record["clip"] == SPEC and record["face_attributes"] == "clip"


def test_environment_is_the_default_read_once_and_a_parameter_wins(monkeypatch, no_env):
    assert ControlModels(SHAPES).clip_spec == "shapes-clip"
    monkeypatch.setenv("ENERGYQL_CLIP", SPEC)
    monkeypatch.setenv("ENERGYQL_FACE_ATTRIBUTES", "clip")
    models = ControlModels(FACES)
    assert models.clip_spec == SPEC and models.face_attributes == "clip"
    monkeypatch.delenv("ENERGYQL_CLIP")  # read when built, not again
    assert controls_record(models)["clip"] == SPEC
    explicit = ControlModels(FACES, clip="shapes-clip", face_attributes="fairface:/w/ff.pt")
    assert controls_record(explicit)["clip"] == "shapes-clip"
    assert controls_record(explicit)["face_attributes"] == "fairface:/w/ff.pt"


def test_bad_values_fail_when_the_set_is_built(no_env):
    with pytest.raises(EnergyQLError, match="face attribute backend 'resnet'"):
        ControlModels(FACES, face_attributes="resnet")
    with pytest.raises(EnergyQLError, match="empty member"):
        ControlModels(SHAPES, clip="shapes-clip + ")


def test_train_from_python_records_the_clip_option(tmp_path, no_env):
    artifact = eq.train('clip("a red circle")', gen=register_tiny(), out=tmp_path / "art",
                        progress=False, clip=SPEC, **TINY)
    assert artifact.manifest.controls["clip"] == SPEC
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["controls"]["clip"] == SPEC
    assert "ENERGYQL_CLIP" not in os.environ


def test_cli_clip_reaches_the_models_without_touching_the_environment(tmp_path, no_env):
    out = tmp_path / "art"
    result = CliRunner().invoke(app, [
        "run", 'clip("a red circle")', "--gen", register_tiny(), "--out", str(out),
        "--clip", SPEC, "--face-attributes", "clip", "--steps", "2", "--batch", "4",
        "--warm-start", "0", "--samples", "64", "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["controls"]["clip"] == SPEC
    assert "ENERGYQL_CLIP" not in os.environ
    assert "ENERGYQL_FACE_ATTRIBUTES" not in os.environ
    # eval's --clip reaches its models too: a spec naming no weights fails there, by name.
    result = CliRunner().invoke(app, ["eval", str(out), "--clip", "no-such-clip",
                                      "--samples", "64", "--no-progress"])
    assert result.exit_code == 1 and "no-such-clip" in result.output
    assert "ENERGYQL_CLIP" not in os.environ
