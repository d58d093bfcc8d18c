"""Evaluation on ground truth: where a generator says what it drew, eval reports it."""

import pytest
import torch

import energyql as eq
from energyql.evaluation import Judged, evaluate, truth_figures
from energyql.training import TrainConfig


@pytest.fixture(scope="module")
def shapes_metrics(tmp_path_factory):
    torch.manual_seed(0)
    config = TrainConfig(steps=8, batch=32, warm_start_samples=1024, forward_weight=10.0,
                         refit_every=0)
    artifact = eq.train("color == red & shape == circle", gen="shapes", config=config,
                        out=tmp_path_factory.mktemp("truth"), progress=False)
    return evaluate(artifact, samples=300, base_samples=600)


@pytest.mark.slow  # trains on the shapes world and evaluates it (about 10 s)
def test_eval_reports_the_truth_beside_the_judge(shapes_metrics):
    truth = shapes_metrics["truth"]
    assert set(truth) == {"attributes", "joint", "kl_to_target", "tv_to_target", "predicate_share",
                          "judge_agreement", "collateral_drift"}
    # size is the one attribute the program leaves free: its drift from the exact target,
    # read from what was drawn, with the base pool that estimated the target
    drift = truth["collateral_drift"]
    assert set(drift["tv"]) == {"size"} and 0 <= drift["tv"]["size"] <= 1
    assert drift["base_samples"] == 600 and 1 <= drift["base_ess"] <= 600
    closeness = shapes_metrics["closeness"]["stage 1"]
    assert 0 < closeness["ess_fraction"] <= 1 and closeness["kl"] >= 0
    # every pair of catalog attributes, keyed like the judged joint
    assert set(truth["joint"]) == {"color x size", "shape x color", "shape x size"}
    assert set(truth["predicate_share"]) == set(shapes_metrics["predicate_share"])
    assert "truth" in shapes_metrics["base"]


@pytest.mark.slow  # shares the trained shapes run above
def test_the_judge_mostly_agrees_with_the_truth_on_shapes(shapes_metrics):
    agreement = shapes_metrics["truth"]["judge_agreement"]
    assert set(agreement) == {"shape", "color", "size"}
    assert min(agreement.values()) >= 0.95  # measured 0.98-1.0 on 400 samples
    judged = shapes_metrics["predicate_share"]["all"]
    true = shapes_metrics["truth"]["predicate_share"]["all"]
    assert abs(judged - true) <= 0.05


def test_truth_figures_count_what_was_drawn():
    from energyql.worlds.shapes import CATALOG as SHAPES

    labels = {"shape": torch.tensor([0, 0, 1, 2]), "color": torch.tensor([0, 1, 0, 0]),
              "size": torch.tensor([1, 1, 0, 0])}
    judged_labels = dict(labels, shape=torch.tensor([0, 1, 1, 2]))  # one mistake in four
    truth = Judged(labels, {}, {}, None)
    judged = Judged(judged_labels, {}, {}, None, truth)
    result = truth_figures(judged, None, SHAPES)
    assert result["judge_agreement"] == {"shape": 0.75, "color": 1.0, "size": 1.0}
    assert result["attributes"]["shape"] == {"circle": 0.5, "square": 0.25, "triangle": 0.25}


def test_a_generator_that_does_not_know_reports_no_truth():
    from energyql.generators.base import ModuleGenerator

    net = torch.nn.Sequential(torch.nn.Linear(4, 3 * 32 * 32), torch.nn.Unflatten(1, (3, 32, 32)))
    gen = ModuleGenerator(net, latent_dim=4, catalog="shapes")
    metrics = evaluate(gen, samples=16)
    assert "attributes" in metrics and "truth" not in metrics


def test_conditional_figures_add_the_drawn_pose_and_identity():
    from energyql.energies import ControlModels
    from energyql.evaluation import conditional_figures

    config = TrainConfig(steps=3, batch=16, refit_every=0)
    artifact = eq.train("pose(x in 0.3..0.7) & keep(identity)", gen="shapes", config=config,
                        progress=False)
    sampler = artifact.sampler
    figures = conditional_figures(sampler, ControlModels("shapes"), rows=8, steps=3)
    assert set(figures["truth"]["pose_error"]) == {"x"}
    # the drawn x at each requested value, measured directly
    noise = torch.randn(8, sampler.latent_dim, generator=torch.Generator().manual_seed(0))
    drawn = sampler.root.truth(sampler.latent(noise, sampler.context_tensor({"x": 0.3}, 8)))
    assert drawn["x"].shape == (8,)
    assert 0 <= figures["truth"]["pose_error"]["x"] < 1
