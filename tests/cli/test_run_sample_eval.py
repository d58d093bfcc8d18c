"""`energyql run`, `sample` and `eval` through the CLI on a tiny test generator."""

import json
import re

import pytest
from typer.testing import CliRunner

from energyql.cli import app
from tests.toys import register_tiny

runner = CliRunner()
# No start pool (the shapes world judges 8,192 base samples for it: most of a tiny run).
FAST = ["--steps", "6", "--batch", "8", "--samples", "64", "--warm-start", "0", "--no-progress"]
RUN = ["run", "color == red & uniform(size)", "--warm-start", "64", "--forward-weight", "2",
       "--steps", "6", "--batch", "8", "--samples", "64"]


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory):
    """A run with progress on, its stderr captured (not a terminal): what a log file gets."""
    gen = register_tiny()
    out = tmp_path_factory.mktemp("run") / "art"
    result = runner.invoke(app, [*RUN, "--gen", gen, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return gen, out, result


@pytest.fixture(scope="module")
def trained(piped_run):
    gen, out, _ = piped_run
    return gen, out


def test_a_piped_run_shows_progress_for_every_phase_on_stderr(piped_run):
    _, out, result = piped_run
    lines = result.stderr.splitlines()
    for phase in ("stage 1: fitting λ on", "stage 1: mass-covering start on 64",
                  "stage 1: training", "evaluating on 64 samples", "grids", "writing the report"):
        started = [line for line in lines if phase in line and line.endswith("started")]
        done = [line for line in lines if phase in line and " done in " in line]
        assert started and done, f"{phase!r} not shown in:\n{result.stderr}"
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", lines[0])  # timestamped lines
    assert "training" not in result.stdout  # progress never goes to stdout
    assert any("6/6 step (100%)" in line and "loss=" in line for line in lines)


def test_the_run_logs_every_step_and_lists_its_files(piped_run):
    from energyql.runlog import read_log

    _, out, result = piped_run
    steps = [r for r in read_log(out) if r["event"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(r["loss"], float) and "uniform(size)" in r["parts"] for r in steps)
    assert (out / "curves.png").is_file()
    listed = result.stdout.split("wrote ")[-1]
    for name in ("report.md", "report.html", "log.jsonl", "curves.png"):
        assert name in listed


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
    a = runner.invoke(app, [*args, "--out", str(tmp_path / "a.png"),
                            "--tensors", str(tmp_path / "a.st")])
    b = runner.invoke(app, [*args, "--out", str(tmp_path / "b.png"),
                            "--tensors", str(tmp_path / "b.st")])
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
    result = runner.invoke(app, ["eval", "--gen", gen, "--expr", "uniform(shape)",
                                 "--samples", "16", "--json"])
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
    # the new stage is set beside the stage before it: panels and figures
    stage2 = (tmp_path / "more" / "report.md").read_text().split("### Stage 2")[1]
    assert "| base | stage 1 | stage 2 |" in stage2 and "| figure | stage 1 | stage 2 |" in stage2
    assert "KL to target (shape)" in stage2.split("## Attributes")[0]


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
    result = runner.invoke(app, ["eval", "--gen", gen, "--expr", "shape == circle",
                                 "--samples", "16", "--sampler", "rejection", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["sampler"]["sampler"] == "rejection" and figures["samples"] == 16
    base = runner.invoke(app, ["eval", "--gen", gen, "--expr", "shape == circle", "--samples", "64",
                               "--json"])
    base_share = json.loads(base.stdout)["predicate_share"]["shape == circle"]
    assert figures["predicate_share"]["shape == circle"] > 2 * base_share
    result = runner.invoke(app, ["sample", str(out), "--sampler", "rejectoin"])
    assert result.exit_code == 2 and "did you mean 'rejection'" in result.output


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    """A conditional artifact on the tiny generator (x trained on 0.3..0.7), saved as run does."""
    from energyql.energies.conditional import ContextParam
    from energyql.flows import FlowConfig, LatentFlow
    from energyql.sampler import Artifact, StageSampler, manifest_for
    from tests.toys import TinyImageGenerator

    register_tiny()
    flow = LatentFlow(FlowConfig(dim=8, context_dim=1, blocks=2, width=16))
    stage = StageSampler(TinyImageGenerator(), flow, 1, "pose(x in 0.3..0.7)",
                         [ContextParam("pose", "x", 0.3, 0.7)])
    out = tmp_path_factory.mktemp("pose")
    Artifact(stage, manifest_for(stage, source="pose(x in 0.3..0.7)")).save(out)
    return out


@pytest.mark.parametrize("args, message", [
    (["--set", "x=0.95"], "x=0.95 is outside the trained range 0.3..0.7"),
    (["--set", "y=0.5"], "unknown context parameter 'y'"),
    (["--set", "x"], "--set expects NAME=NUMBER"),
    (["--sweep", "x=0.1..0.7:3"], "x=0.1 is outside the trained range"),
    (["--sampler", "flow+sir"], "artifacts with sliders only"),
])
def test_bad_context_is_a_usage_error_and_writes_nothing(conditional, tmp_path, args, message):
    grid = tmp_path / "grid.png"
    result = runner.invoke(app, ["sample", str(conditional), "-n", "2", "--out", str(grid), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not grid.exists()


def test_good_context_samples_the_conditional_artifact(conditional, tmp_path):
    result = runner.invoke(app, ["sample", str(conditional), "-n", "2", "--set", "x=0.7",
                                 "--out", str(tmp_path / "a.png"), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["sample", str(conditional), "-n", "2", "--sweep", "x=0.3..0.7:3",
                                 "--out", str(tmp_path / "b.png"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.png").is_file() and (tmp_path / "b.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--set", "x=0.5"], "this sampler is unconditional"),
    (["--sweep", "x=0.3..0.7:3"], "--sweep needs an artifact with sliders or pose"),
    (["--sampler", "flow+sir", "--option", "pool=abc"], "pool='abc' is not a count"),
    (["--sampler", "flow+sir", "--option", "pol=4"], "does not take the option 'pol'"),
    (["-n", "0"], "'-n'"),
    (["--seed", "-1"], "'--seed'"),
])
def test_bad_sample_requests_on_an_unconditional_artifact_exit_2(trained, tmp_path, args,
                                                                  message):
    _, out = trained
    grid = tmp_path / "grid.png"
    result = runner.invoke(app, ["sample", str(out), "--out", str(grid), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and not grid.exists()


def test_eval_usage_mistakes_exit_2(trained, tmp_path):
    _, out = trained
    result = runner.invoke(app, ["eval"])
    assert result.exit_code == 2 and "give either an ARTIFACT" in result.output
    result = runner.invoke(app, ["eval", str(out), "--sampler", "flow+sir", "--option", "pool=x"])
    assert result.exit_code == 2 and "is not a count" in result.output
    result = runner.invoke(app, ["eval", str(out), "--samples", "0"])
    assert result.exit_code == 2 and "'--samples'" in result.output
    result = runner.invoke(app, ["eval", str(out), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in unboxed(result.output)


def unboxed(text: str) -> str:
    """Click's error box without its borders and line breaks (long paths wrap inside it)."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


def test_a_run_on_an_embedded_world_reports_the_frechet_distance(trained):
    _, out = trained
    frechet = json.loads((out / "metrics.json").read_text())["frechet"]
    assert frechet["reference"] == "flow+sir" and frechet["samples"] == 64
    assert frechet["frechet"] >= 0 and frechet["base_frechet"] >= 0
    assert "Fréchet distance to the exact target" in (out / "report.md").read_text()


def test_eval_frechet_and_an_offline_fid(trained, tmp_path, monkeypatch):
    _, out = trained
    result = runner.invoke(app, ["eval", str(out), "--samples", "32", "--frechet", "--json",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frechet"]["samples"] == 32
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    (tmp_path / "ref").mkdir()
    result = runner.invoke(app, ["eval", str(out), "--samples", "8", "--fid",
                                 str(tmp_path / "ref"), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "inception" in result.output.lower()
