"""End-to-end training on the embedded shapes world: each control kind moves the distribution
the way its expression says, judged by the classifier and by what the generator drew (its
truth). Single-stage runs use the shapes defaults (600 steps), so the thresholds are the goals
of docs/training.md, with a margin for the smaller evaluation (600 samples). The red-circle
`then debias` run checks its second stage and trains 300 steps per stage (CI's budget); the
CLIP one keeps the defaults (at 300 steps its first stage drew 0.695 blue triangles, under
its 0.75 bound).

Every run takes one torch thread: on a 2-core machine where another process holds a core,
two threads run torch 10-40x slower than one, and the test process shares the cores with
its subprocesses and chromium. (The red-circle `then debias` test took 446 s with two threads
and 600 steps per stage beside one other process; the same run with one thread and 300 steps
took 159 s beside two, 2026-12-07.)"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from energyql.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def _run(tmp_path, expression, *extra):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", expression, "--gen", "shapes", "--out", str(out),
                                 "--no-progress", "--threads", "1", *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text()), out


def test_predicates_select_red_circles_and_keep_size_as_in_the_base(tmp_path):
    metrics, out = _run(tmp_path, "color == red & shape == circle", "--samples", "600")
    assert metrics["base"]["predicate_share"]["all"] < 0.5
    assert metrics["predicate_share"]["all"] >= 0.9
    assert metrics["truth"]["predicate_share"]["all"] >= 0.9
    # Size is left free: its drift from the exact target, on ground truth (measured 0.06 at
    # the defaults, docs/training.md), bounded here so that it cannot grow unnoticed.
    assert metrics["truth"]["collateral_drift"]["tv"]["size"] <= 0.12
    assert metrics["closeness"]["stage 1"]["ess_fraction"] >= 0.1
    stage = json.loads((out / "manifest.json").read_text())["stages"][0]
    train = stage["train"]
    assert train["temper"] == 1.0 and train["chain_weight"] == 3.0  # the exact target's estimator
    assert stage["flow"]["kind"] == "spline" and train["coupling"] == "spline"  # the default
    assert train["images"] <= 48_000  # the defaults' budget (pool 8,192 + 600 x 64 + refits)


def test_uniform_over_a_joint_flattens_it(tmp_path):
    metrics, _ = _run(tmp_path, "uniform(shape x color)", "--samples", "600")
    assert metrics["base"]["kl_to_target"]["shape x color"] > 0.3
    assert metrics["kl_to_target"]["shape x color"] <= 0.05
    assert metrics["truth"]["kl_to_target"]["shape x color"] <= 0.05


def test_then_debias_fixes_the_size_balance_the_first_stage_left(tmp_path):
    # Red circles are mostly large in the base; the second stage evens out size while the
    # first stage's selection stays.
    metrics, out = _run(tmp_path, "color == red & shape == circle | then debias(size)",
                        "--samples", "600", "--steps", "300")
    assert metrics["kl_to_target"]["size"] <= 0.03
    assert metrics["base"]["kl_to_uniform"]["size"] > 0.02
    assert metrics["joint"]["shape x color"]["circle,red"] >= 0.6  # far above the base share
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["index"] for s in manifest["stages"]] == [1, 2]


def test_a_clip_prompt_finds_a_rare_combination_and_debias_evens_its_size(tmp_path):
    # Blue triangles are ~1 % of the base; the text prompt alone (the small CLIP, no
    # classifier) must find them, and the second stage must even out their sizes.
    # The affine flow, for CI's time budget (its bound was set with it; the spline default
    # reached 0.85 in 20,992 images in benchmarks/run.py --quick).
    metrics, out = _run(tmp_path, 'clip("a blue triangle") | then debias(size)',
                        "--samples", "600", "--coupling", "affine")
    assert metrics["base"]["joint"]["shape x color"]["triangle,blue"] < 0.03
    # stage 1 alone reached 0.858 (truth) at the defaults, benchmarks/to_target.py
    assert metrics["joint"]["shape x color"]["triangle,blue"] >= 0.75
    assert metrics["kl_to_target"]["size"] <= 0.02
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"][0]["train"]["chain_weight"] == 3.0  # the shapes default
    assert "kind" not in manifest["stages"][0]["flow"]  # affine, as asked


def test_kill_9_then_resume_finishes_like_an_uninterrupted_run(tmp_path):
    args = ["run", "color == red & shape == circle", "--gen", "shapes", "--steps", "120",
            "--batch", "32", "--samples", "300", "--no-progress", "--threads", "1"]
    whole = tmp_path / "whole"
    assert runner.invoke(app, [*args, "--out", str(whole)]).exit_code == 0
    cut = tmp_path / "cut"
    process = subprocess.Popen([sys.executable, "-m", "energyql", *args, "--out", str(cut)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cut / "stage1.ckpt.safetensors").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (cut / "stage1.ckpt.safetensors").exists()
    assert not (cut / "manifest.json").exists(), "killed before the end, no artifact yet"
    result = runner.invoke(app, [*args, "--out", str(cut), "--resume"])
    assert result.exit_code == 0, result.output
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (cut, whole)]
    assert metrics[0] == metrics[1]


def test_pose_with_identity_kept_moves_the_shape_and_keeps_it(tmp_path):
    metrics, out = _run(tmp_path, "pose(x in 0.3..0.7) & keep(identity)", "--steps", "200",
                        "--samples", "300")
    assert metrics["pose_error"]["x"] <= 0.05
    assert metrics["identity_within"] <= 0.5 * metrics["identity_between"]
    grid = tmp_path / "sweep.png"
    result = runner.invoke(app, ["sample", str(out), "-n", "4", "--sweep", "x=0.3..0.7:5",
                                 "--out", str(grid)])
    assert result.exit_code == 0 and grid.is_file(), result.output
