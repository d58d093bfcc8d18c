"""The benchmark scripts' own pieces: progress per item, goals, truth figures (the scripts
themselves train for minutes and are run by hand; docs/benchmarks.md has their figures)."""

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCHMARKS))  # run.py imports to_target.py as the script would
    try:
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}",
                                                      BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_each_benchmark_item_reports_progress_when_piped():
    from energyql.progress import Progress

    run = _load("run")
    stream = io.StringIO()
    run._PROGRESS = Progress(enabled=True, stream=stream)
    with run._item("speed: 512 samples per flow sampler"):
        pass
    lines = stream.getvalue().splitlines()
    assert "speed: 512 samples per flow sampler  started" in lines[0]
    assert "done in" in lines[-1]


def test_a_goal_holds_only_when_every_figure_meets_it():
    goals = _load("to_target")
    card = goals.ALL_GOALS["portraits_card_stage1"]
    assert card.met_by({"share": 0.96, "kl": 0.01})
    assert not card.met_by({"share": 0.96, "kl": 0.03})
    assert not card.met_by({"share": 0.9, "kl": 0.0})  # issue 22: smiling men >= 0.95
    uniform = goals.GOALS["uniform"]
    assert uniform.met_by({"kl": 0.019}) and not uniform.met_by({"kl": 0.021})
    # issue 22's budgets, and the drift goal every goal's record is judged against
    assert goals.GOALS["blue_triangle"].budget == 20_000
    assert goals.GOALS["red_circle"].budget == 15_000
    assert goals.GOALS["uniform"].budget == 40_000
    assert goals.ALL_GOALS["portraits_rare_cell"].budget == 10_000
    assert goals.DRIFT_GOAL == 0.03


def test_truth_figures_count_what_the_generator_drew():
    from energyql.catalog import CATALOGS
    from energyql.generators import load

    goals = _load("to_target")
    shapes = load("shapes")

    class Base:  # a sampler that is the generator itself: latent = noise
        root, latent_dim = shapes, shapes.latent_dim

        @staticmethod
        def latent(eps):
            return eps

    figures = goals.truth_figures(goals.GOALS["blue_triangle"], Base, n=3000, seed=5)
    with torch.no_grad():
        drawn = shapes.truth(torch.randn(3000, shapes.latent_dim,
                                         generator=torch.Generator().manual_seed(5)))
    values = {a.name: list(a.values) for a in CATALOGS["shapes"].attributes}
    hits = (drawn["shape"] == values["shape"].index("triangle")) \
        & (drawn["color"] == values["color"].index("blue"))
    assert figures == {"share": float(hits.float().mean())}
    assert 0.0 < figures["share"] < 0.03  # blue triangles are ~1 % of the base
    kl = goals.truth_figures(goals.GOALS["uniform"], Base, n=3000, seed=5)["kl"]
    assert 0.2 < kl < 0.5  # the base's shape x color is far from uniform (0.33)


def test_gpu_benchmark_times_the_trainers_own_step():
    import argparse

    import energyql as eq
    from energyql.energies import ControlModels, lower_stage
    from energyql.generators import load

    gpu = _load("gpu")
    shapes = load("shapes")
    energy = lower_stage(eq.compile("color == red", gen="shapes").stages[0],
                         ControlModels("shapes"))
    ctx = gpu.Context(argparse.Namespace(device="cpu", tiny=True, budget=60))
    ctx.scratch.rmdir()
    step = gpu._train_step_timing(ctx, shapes, energy, batch=8, amp=False, warmup=1, repeat=2)
    assert step["finite_losses"] == step["steps"] == 3 and step["skipped_steps"] == 0
    assert set(step["phases_ms_median"]) == {"flow+generator", "energy", "estimator",
                                             "backward+step"}
    assert all(v > 0 for v in step["phases_ms_median"].values())
    assert {"reverse", "score", "chains"} <= set(step["estimator_parts"])  # flat term, chains
    assert step["flow_params_max_change"] > 0  # the optimizer stepped the flow
    # the timing marks are gone: the generator and the energy decode and judge as before
    assert "decode" not in vars(shapes) and "parts" not in vars(energy)
    check = gpu._train_stage_crosscheck(ctx, shapes, energy, batch=8, amp=False, steps=2)
    assert check["steps"] == 2 and check["losses_finite"]


def test_slider_stages_reads_the_exact_share_off_stage_ones_triangles():
    from types import SimpleNamespace

    stages = _load("slider_stages")

    class Root:
        latent_dim = 2

        def truth(self, z):  # blue when z0 > z1, a triangle when z1 > 0: blue triangles rare
            return {"color": torch.where(z[:, 0] > z[:, 1], 2, 0),
                    "shape": torch.where(z[:, 1] > 0, 2, 0)}

    root = Root()
    # Stage 1 keeps the noise; stage 2 moves every sample to z1 > 0 (all triangles) and flips
    # z0: blue after it is P(-z0 > |z1|) = 1/4, the exact share P(z0 > z1 | z1 > 0) = 1/4 too.
    first = SimpleNamespace(root=root, latent=lambda eps: eps)
    second = SimpleNamespace(latent=lambda eps: torch.stack([-eps[:, 0], eps[:, 1].abs()], 1))
    artifact = SimpleNamespace(at=lambda p: SimpleNamespace(
        sampler=SimpleNamespace(stages=[first, second])))
    row = stages.shares_at(artifact, 0.5, 4000, 2000)
    assert row["stage1_blue"] == pytest.approx(0.5, abs=0.03)
    assert row["stage1_triangle"] == pytest.approx(0.5, abs=0.03)
    assert row["exact_blue"] == pytest.approx(0.25, abs=0.03)  # not the overall 0.5
    assert row["final_triangle"] == 1.0
    assert row["final_blue"] == pytest.approx(0.25, abs=0.03)
    assert row["stage1_triangles_counted"] == pytest.approx(2000, abs=150)


def test_slider_benchmarks_read_training_settings_as_numbers_where_they_are():
    sliders = _load("sliders")
    assert sliders._setting("chain_weight=0") == ("chain_weight", 0)
    assert sliders._setting("lr=3e-3") == ("lr", 0.003)
    assert sliders._setting("device=cpu") == ("device", "cpu")
    ablation = _load("slider_ablation")
    assert ablation.SETTINGS[0] == 0.0 and ablation.SETTINGS[-1] == 3.0  # the slider's ends


def test_plots_put_a_round_number_at_the_axis_top_and_draw_the_goal(tmp_path):
    from PIL import Image

    run = _load("run")
    assert [run.round_up(v) for v in (0.1002, 0.1, 0.26, 3, 0.0012)] == \
        pytest.approx([0.2, 0.1, 0.5, 5.0, 0.002])
    path = tmp_path / "curve.png"
    run.plot_curves(path, "t", {"a": [(1, 0.1002), (2, 0.01)]}, "KL", goal=0.02)
    pixels = Image.open(path).convert("RGB")
    # The dashed goal line is gray at 0.02 of a 0.2 axis: 9/10 of the way down the plot area.
    goal_row = round(30 + 230 - 0.1 * 230)
    row = [pixels.getpixel((x, goal_row)) for x in range(70, 480)]
    assert sum(p == (128, 128, 128) for p in row) > 100


def test_the_slider_benchmark_reads_flow_sir_shares_off_the_generators_truth():
    import energyql as eq

    sliders = _load("sliders")
    artifact = eq.train("dist(color, blue = p in 0.1..0.9)", gen="shapes", progress=False,
                        steps=5, warm_start_samples=0, moment_samples=512,
                        closeness_samples=64, threads=1)
    for p in (0.2, 0.7):  # a 5-step flow is far off; SIR's exact weights bring the share back
        figures = sliders.corrected_share(artifact.at({"p": p}), sliders.WORLDS["shapes"], 400)
        assert figures["sir_true_share"] == pytest.approx(p, abs=0.08)
        assert 0 < figures["sir_ess_fraction"] <= 1


def test_the_flow_benchmark_times_all_four_flows(tmp_path):
    flows = _load("flows")
    out = tmp_path / "flows.json"
    result = flows.main(["--dim", "4", "--batch", "8", "--blocks", "1", "--width", "8",
                         "--steps", "2", "--rounds", "1", "--json", str(out)])
    assert set(result["ms_per_step"]) == {"freia_allinone", "zuko_realnvp", "energyql_spline",
                                          "zuko_nsf"}
    assert all(ms > 0 for ms in result["ms_per_step"].values())
    assert result["spline_over_freia"] > 0 and result["zuko_nsf_over_spline"] > 0
    assert json.loads(out.read_text())["ms_per_step"] == result["ms_per_step"]
