"""End-to-end training on the embedded shapes world: each control kind moves the distribution
the way its expression says, judged by the classifier and by what the generator drew (its
truth). Single-stage runs use the shapes defaults (600 steps), so the thresholds are the goals
of docs/training.md, with a margin for the smaller evaluation (600 samples). The `then
debias` test adds its stage (200 steps, CI's budget) to the red-circle run's artifact with
`--from`, so that stage 1 trains once for both tests (a module fixture: pytest-xdist's
`--dist loadfile` runs a file on one worker). The CLIP, resume and pose runs are in
test_shapes_more_runs.py, so that the two files train on two workers at once.

Every run takes one torch thread: on a 2-core machine where another process holds a core,
two threads run torch 10-40x slower than one, and the test process shares the cores with
its subprocesses, chromium and the other test worker."""

import json

import pytest

from tests.e2e.helpers import run_world

pytestmark = pytest.mark.slow


def _run(folder, expression, *extra):
    return run_world(folder, "shapes", expression, *extra)


@pytest.fixture(scope="module")
def red_circles(tmp_path_factory):
    """The red-circle program at the shapes defaults: (metrics, artifact folder)."""
    return _run(tmp_path_factory.mktemp("red-circles"), "color == red & shape == circle",
                "--samples", "600")


def test_predicates_select_red_circles_and_keep_size_as_in_the_base(red_circles):
    metrics, out = red_circles
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


def test_then_debias_fixes_the_size_balance_the_first_stage_left(red_circles, tmp_path):
    # Red circles are mostly large in the base; the second stage, added to the saved red-circle
    # artifact, evens out size while the first stage's selection stays.
    _, first = red_circles
    # 200 steps (CI's budget): measured 2026-12-08, size KL 0.0005 (judge) and 0.0001
    # (truth), red circles 0.878.
    metrics, out = _run(tmp_path, "then debias(size)", "--from", str(first), "--steps", "200",
                        "--samples", "600")
    assert metrics["kl_to_target"]["size"] <= 0.03
    assert metrics["base"]["kl_to_uniform"]["size"] > 0.02
    assert metrics["joint"]["shape x color"]["circle,red"] >= 0.6  # far above the base share
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["index"] for s in manifest["stages"]] == [1, 2]
    assert manifest["canonical"] == "color == red & shape == circle | then debias(size)"
    assert manifest["stages"][1]["train"]["steps"] == 200
