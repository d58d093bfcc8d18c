"""`energyql run`, `sample` and `eval` through the CLI on a tiny test generator."""

import json

import pytest
from typer.testing import CliRunner

from energyql.cli import app
from tests.toys import register_tiny

runner = CliRunner()
FAST = ["--steps", "6", "--batch", "8", "--samples", "64", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    gen = register_tiny()
    out = tmp_path_factory.mktemp("run") / "art"
    result = runner.invoke(app, ["run", "color == red & uniform(size)", "--gen", gen,
                                 "--out", str(out), "--warm-start", "64", "--forward-weight", "2",
                                 *FAST])
    assert result.exit_code == 0, result.output
    return gen, out


def test_run_writes_artifact_grids_metrics_and_report(trained):
    _, out = trained
    for name in ("manifest.json", "flows.safetensors", "samples.png", "base.png",
                 "metrics.json", "report.md", "hist_color.png"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["canonical"] == "color == red & uniform(size)"
    assert manifest["generator"]["id"] == "toy-shapes"
    assert manifest["stages"][0]["fits"], "λ fit should be recorded"
    stage = manifest["stages"][0]
    assert stage["train"]["warm_start_samples"] == 64 and stage["train"]["forward_weight"] == 2.0
    assert stage["warm_start"]["samples"] == 64 and stage["warm_start"]["steps"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("samples", "attributes", "joint", "kl_to_target", "predicate_share",
                "energies", "base", "ess", "collateral_drift"):
        assert key in metrics, key
    assert set(metrics["kl_to_target"]) == {"size"}
    report = (out / "report.md").read_text()
    assert "## Attributes" in report and "share satisfying color == red" in report


def test_sample_writes_a_grid_and_is_reproducible(trained, tmp_path):
    _, out = trained
    args = ["sample", str(out), "-n", "4", "--seed", "3"]
    a = runner.invoke(app, [*args, "--out", str(tmp_path / "a.png"), "--tensors", str(tmp_path / "a.st")])
    b = runner.invoke(app, [*args, "--out", str(tmp_path / "b.png"), "--tensors", str(tmp_path / "b.st")])
    assert a.exit_code == 0 and b.exit_code == 0, a.output
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    from safetensors.torch import load_file

    images = load_file(str(tmp_path / "a.st"))["images"]
    assert images.shape == (4, 3, 32, 32) and images.min() >= 0 and images.max() <= 1


def test_eval_json_of_an_artifact_and_of_a_generator(trained):
    gen, out = trained
    result = runner.invoke(app, ["eval", str(out), "--samples", "32", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["samples"] == 32 and "base" in figures
    result = runner.invoke(app, ["eval", "--gen", gen, "--expr", "uniform(shape)", "--samples", "16", "--json"])
    assert result.exit_code == 0, result.output
    assert "shape" in json.loads(result.stdout)["kl_to_target"]


def test_adding_a_stage_to_a_saved_artifact(trained, tmp_path):
    _, out = trained
    result = runner.invoke(app, ["run", "then uniform(shape)", "--from", str(out),
                                 "--out", str(tmp_path / "more"), *FAST])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "more" / "manifest.json").read_text())
    assert [s["index"] for s in manifest["stages"]] == [1, 2]
    assert manifest["canonical"] == "color == red & uniform(size) | then uniform(shape)"


def test_expression_errors_exit_2_and_runtime_errors_exit_1(tmp_path):
    result = runner.invoke(app, ["run", "colr == red", "--gen", "shapes", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "did you mean 'color'" in result.output
    result = runner.invoke(app, ["sample", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "manifest.json is missing" in result.output
    result = runner.invoke(app, ["run", "uniform(shape)", "--gen", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown generator" in result.output


def test_sample_and_eval_accept_the_corrected_and_baseline_samplers(trained, tmp_path):
    gen, out = trained
    result = runner.invoke(app, ["sample", str(out), "-n", "8", "--sampler", "flow+sir",
                                 "--out", str(tmp_path / "sir.png")])
    assert result.exit_code == 0, result.output
    assert "ess_fraction" in result.output and (tmp_path / "sir.png").is_file()
    result = runner.invoke(app, ["eval", "--gen", gen, "--expr", "shape == circle", "--samples", "16",
                                 "--sampler", "rejection", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["sampler"]["sampler"] == "rejection" and figures["samples"] == 16
    base = runner.invoke(app, ["eval", "--gen", gen, "--expr", "shape == circle", "--samples", "64",
                               "--json"])
    base_share = json.loads(base.stdout)["predicate_share"]["shape == circle"]
    assert figures["predicate_share"]["shape == circle"] > 2 * base_share
    result = runner.invoke(app, ["sample", str(out), "--sampler", "rejectoin"])
    assert result.exit_code == 2 and "did you mean 'rejection'" in result.output
