"""End to end without downloads: a tiny random StyleGAN2 and a tiny random CLIP in local files.

``energyql run 'clip("a smiling man") & uniform(race x age) | then debias(clip_bias)'`` trains
both stages over ``stylegan2:PATH`` (the faces world), with ``ENERGYQL_CLIP`` pointing the
world's default CLIP (ViT-B-32:openai, not downloadable here) at the local tiny model, and writes
an artifact that loads and samples. Without the override and offline, the run fails cleanly.
"""

import json

import pytest
import torch
from typer.testing import CliRunner

import energyql
from energyql.generators.stylegan2 import StyleGAN2
from tests.controls.helpers import save_tiny_clip_dir
from tests.generators.sg2_helpers import seeded_state_dict

# Random models give the moment fits almost no effective samples; the trainer says so.
pytestmark = pytest.mark.filterwarnings("ignore:.*effective sample size:UserWarning")

EXPRESSION = 'clip("a smiling man") & uniform(race x age) | then debias(clip_bias)'


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Paths of a tiny random StyleGAN2 checkpoint (rosinality format) and a tiny CLIP folder."""
    folder = tmp_path_factory.mktemp("e2e_models")
    channels = {2 ** i: 8 for i in range(2, 11)}
    net = StyleGAN2(16, 16, 2, channels=channels)
    net.load_state_dict(seeded_state_dict(net.state_dict(), 5))
    generator = folder / "tiny-sg2.pt"
    torch.save({"g_ema": net.state_dict(), "latent_avg": torch.zeros(16)}, generator)
    return generator, save_tiny_clip_dir(folder / "clip")


@pytest.fixture
def environment(tmp_path, monkeypatch, models):
    """No network, an empty cache, and the world's default CLIP replaced by the tiny one."""
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    monkeypatch.setenv("ENERGYQL_CLIP", f"local-dir:{models[1]}")
    monkeypatch.delenv("ENERGYQL_FACE_ATTRIBUTES", raising=False)
    return models[0]


def _check_artifact(out, generator):
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["index"] for s in manifest["stages"]] == [1, 2]
    assert manifest["generator"]["id"] == f"stylegan2:{generator}"
    artifact = energyql.load(out)
    images = artifact.sample(3, seed=0)
    assert images.shape == (3, 3, 16, 16) and torch.isfinite(images).all()
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, artifact.sample(3, seed=0))


def test_train_with_report_trains_both_stages(environment, tmp_path):
    program = energyql.compile(EXPRESSION, gen=f"stylegan2:{environment}")
    out = tmp_path / "run"
    artifact = energyql.train(program, gen=f"stylegan2:{environment}", out=out, report=True,
                              steps=2, batch=2, samples=8, grid=4, progress=False, threads=1,
                              clip_copies=2, moment_samples=32, blocks=2, width=32)
    for name in ("samples.png", "base.png", "metrics.json", "report.md"):
        assert (out / name).is_file()
    assert set(artifact.manifest.metrics["attributes"]) >= {"race", "age", "gender"}
    _check_artifact(out, environment)


def test_cli_run_writes_an_artifact_that_loads_and_samples(environment, tmp_path):
    from energyql.cli import app

    out = tmp_path / "cli-run"
    result = CliRunner().invoke(app, ["run", EXPRESSION, "--gen", f"stylegan2:{environment}",
                                      "--steps", "2", "--batch", "2", "--samples", "8",
                                      "--threads", "1", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    _check_artifact(out, environment)


def test_cli_without_clip_weights_offline_fails_cleanly(environment, tmp_path, monkeypatch):
    from energyql.cli import app

    monkeypatch.delenv("ENERGYQL_CLIP")
    out = tmp_path / "no-weights"
    result = CliRunner().invoke(app, ["run", EXPRESSION, "--gen", f"stylegan2:{environment}",
                                      "--steps", "2", "--batch", "2", "--no-progress",
                                      "--out", str(out)])
    assert result.exit_code == 1
    assert "open_clip_model.safetensors" in result.output and "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "cache").exists()  # no partial files anywhere
