"""Sliders in training (issue 24): one amortised flow meets the exact target at every setting.

Toy 2-D worlds whose exact answers are known: a dist() share set by a slider (λ(c) from the
grid), and a weight slider on a quadratic energy (the target is Gaussian at every weight).
"""

from dataclasses import replace

import pytest
import torch

from energyql.energies.conditional import ContextParam
from energyql.energies.constraint import ConstraintEnergy
from energyql.energies.lower import StageEnergy
from energyql.energies.sliders import (
    LambdaGrid,
    SliderScaledEnergy,
    settings_grid,
)
from energyql.errors import EnergyQLError
from energyql.training import TrainConfig, train_stage
from tests.toys import PointGenerator, QuadraticEnergy, SideAttribute

P = ContextParam("slider", "p", 0.2, 0.8)
W = ContextParam("slider", "w", 0.0, 4.0)
CONFIG = TrainConfig(steps=1000, batch=128, lr=5e-3, blocks=3, width=32, moment_samples=8192,
                     warm_start_samples=8192, closeness_samples=512)


def _share_right(sampler, p, n=8000):
    eps = torch.randn(n, 2, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        x = sampler.decode(eps, torch.full((n, 1), p))
    return float(SideAttribute()(x)["side"].exp()[:, 1].mean())


def _share_energy():
    constraint = ConstraintEnergy("dist", ("side",), (0.5, 0.5),
                                  "dist(side, right=p in 0.2..0.8)",
                                  target_at=lambda v: (1 - v["p"], v["p"]))
    return StageEnergy([], [constraint], SideAttribute(), [P])


def test_grid_interpolation_is_exact_at_grid_points_and_linear_between():
    grid = LambdaGrid([P, W], [0, 1], 1, points=3)
    settings = grid.settings()
    assert settings.shape == (9, 2) and settings[1].tolist() == [0.2, 2.0]
    grid.values.copy_((settings[:, :1] * 10 + settings[:, 1:]).float())  # linear in both
    at = torch.tensor([[0.2, 0.0], [0.35, 1.0], [0.8, 4.0], [0.61, 3.3]])
    assert torch.allclose(grid.at(at)[:, 0], at[:, 0] * 10 + at[:, 1], atol=1e-5)
    assert settings_grid([P], 17).shape == (17, 1)


def test_one_flow_meets_a_dist_slider_at_every_setting():
    energy = _share_energy()
    sampler, log = train_stage(PointGenerator(), energy, CONFIG, progress=False)
    assert log.warm_start["steps"] > 0  # the start over the sliders' ranges ran
    # A dist slider's target moves smoothly: the flow reads the raw value (no Fourier features).
    assert sampler.flow.config.frequencies == 0
    # λ at the grid's ends is the exact fit for those targets: opposite signs, growing apart.
    grid = energy.lambda_grid.values
    assert grid.shape == (17, 2)
    assert float(grid[0, 1] - grid[0, 0]) < -0.5 < 0.5 < float(grid[-1, 1] - grid[-1, 0])
    for p in (0.2, 0.35, 0.5, 0.65, 0.8):  # 0.35 and 0.65 lie between grid points
        assert _share_right(sampler, p) == pytest.approx(p, abs=0.04)
    settings = log.closeness["settings"]
    assert [s["setting"]["p"] for s in settings] == [0.2, 0.5, 0.8]
    assert log.closeness["ess_fraction"] == min(s["ess_fraction"] for s in settings) > 0.5


def test_a_weight_slider_gives_each_weight_its_gaussian_target():
    quadratic = QuadraticEnergy([1.5, 0.0], [1.0, 0.0])
    term = SliderScaledEnergy(1.0, 0, quadratic, "(w in 0..4) * quadratic")
    energy = StageEnergy([term], [], None, [W])
    sampler, log = train_stage(PointGenerator(), energy, replace(CONFIG, steps=400),
                               progress=False)
    assert sampler.flow.config.frequencies == CONFIG.slider_frequencies > 0
    eps = torch.randn(8000, 2, generator=torch.Generator().manual_seed(1))
    for w in (0.0, 1.0, 4.0):
        with torch.no_grad():
            x = sampler.decode(eps, torch.full((len(eps), 1), w))
        # Prior N(0, 1) times exp(-w/2 (x - 1.5)^2): mean 1.5 w / (1 + w), variance 1 / (1 + w).
        assert float(x[:, 0].mean()) == pytest.approx(1.5 * w / (1 + w), abs=0.06)
        assert float(x[:, 0].var()) == pytest.approx(1 / (1 + w), rel=0.15)
    assert log.closeness["ess_fraction"] > 0.8


def test_a_resumed_slider_stage_retraces_the_uninterrupted_one(tmp_path):
    from tests.test_train import Crash, CrashingQuadratic

    config = TrainConfig(steps=30, batch=32, blocks=2, width=8, checkpoint_every=10,
                         moment_samples=256, warm_start_samples=0, closeness_samples=64)
    args = ([1.0, 0.5], [1.0, 1.0])

    def energy(quadratic):
        constraint = ConstraintEnergy("dist", ("side",), (0.5, 0.5), "dist(side, right=p)",
                                      target_at=lambda v: (1 - v["p"], v["p"]))
        scaled = SliderScaledEnergy(1.0, 1, quadratic, "(w in 0..4) * quadratic")
        return StageEnergy([scaled], [constraint], SideAttribute(), [P, W])

    whole, _ = train_stage(PointGenerator(), energy(QuadraticEnergy(*args)), config,
                           progress=False)
    with pytest.raises(Crash):  # λ grid pool: 8 calls; then 2 per step (parts, chains)
        train_stage(PointGenerator(), energy(CrashingQuadratic(*args, crash_at=8 + 2 * 25)),
                    config, checkpoint_dir=tmp_path, progress=False)
    resumed_energy = energy(QuadraticEnergy(*args))
    resumed, _ = train_stage(PointGenerator(), resumed_energy, config, checkpoint_dir=tmp_path,
                             resume=True, progress=False)
    assert resumed_energy.lambda_grid.values.abs().sum() > 0  # the grid came back too
    for p, q in zip(whole.flow.state_dict().values(), resumed.flow.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6)


def test_grid_feedback_moves_the_training_offset_only_and_towards_each_target():
    from energyql.flows import FlowConfig, LatentFlow
    from energyql.target import StageTarget
    from energyql.training.fit import refit_grid_offsets

    energy = _share_energy()
    flow = LatentFlow(FlowConfig(dim=2, blocks=2, width=8, context_dim=1))  # the identity
    target = StageTarget(PointGenerator(), energy, flow)
    config = TrainConfig(refit_samples=5000)
    images, worst = refit_grid_offsets(target, config, torch.Generator().manual_seed(0))
    grid = energy.lambda_grid
    assert images == 5000 and worst == pytest.approx(0.3, abs=0.03)  # base 0.5 vs 0.2, 0.8
    assert grid.values.abs().sum() == 0  # the exact fit is left alone
    right = grid.offset[:, 1] - grid.offset[:, 0]
    # Where the target asks for less of 'right' than the flow gives, its λ goes down; more, up.
    assert right[0] < -0.5 and right[-1] > 0.5 and abs(right[8]) < 0.1
    assert torch.all(right[1:] >= right[:-1] - 1e-6)
    # What training uses includes the offset; the exact view does not.
    at = torch.tensor([[0.8]])
    assert float(grid.at(at)[0, 1] - grid.at(at)[0, 0]) > 0.5
    grid.exact = True
    assert grid.at(at).abs().sum() == 0


def test_a_stage_after_a_slider_stage_takes_the_slider_as_its_context():
    """Stage 1 moves the points right as w grows; stage 2 asks for 30 % on the right at every
    w, so its λ (and its flow) must follow the earlier slider."""
    quadratic = QuadraticEnergy([0.5, 0.0], [1.0, 0.0])
    first = StageEnergy([SliderScaledEnergy(1.0, 0, quadratic, "(w in 0..4) * quadratic")],
                        [], None, [W])
    config = replace(CONFIG, steps=400, warm_start_samples=0)
    stage1, _ = train_stage(PointGenerator(), first, config, progress=False)
    constraint = ConstraintEnergy("dist", ("side",), (0.7, 0.3), "dist(side, right=0.3)")
    second = StageEnergy([], [constraint], SideAttribute(), [W])
    assert second.lambda_grid is not None  # λ moves with the inherited slider
    sampler, log = train_stage(stage1, second, replace(config, steps=600), index=2,
                               progress=False)
    assert log.warm_start is None  # one base pool cannot serve every w: no start
    lam = second.lambda_grid.values  # (17, 2): λ_right - λ_left must fall as w pushes right
    assert float((lam[-1, 1] - lam[-1, 0]) - (lam[0, 1] - lam[0, 0])) < -0.5
    for w in (0.0, 1.0, 2.5, 4.0):
        base_share = _share_right(stage1, w)
        assert _share_right(sampler, w) == pytest.approx(0.3, abs=0.04), (w, base_share)
    assert _share_right(stage1, 4.0) > 0.75  # the base really moved
    settings = log.closeness["settings"]
    assert [s["setting"]["w"] for s in settings] == [0.0, 2.0, 4.0]
    assert log.closeness["ess_fraction"] > 0.5


def test_a_stage_cannot_stand_on_a_slider_stage_without_its_slider():
    quadratic = QuadraticEnergy([0.5, 0.0], [1.0, 0.0])
    first = StageEnergy([SliderScaledEnergy(1.0, 0, quadratic, "(w in 0..4) * quadratic")],
                        [], None, [W])
    stage1, _ = train_stage(PointGenerator(), first, replace(CONFIG, steps=2,
                                                             warm_start_samples=0),
                            progress=False)
    with pytest.raises(EnergyQLError, match="does not take its base's slider"):
        train_stage(stage1, StageEnergy([quadratic], [], None), CONFIG, index=2,
                    progress=False)


def test_a_slider_stage_with_chains_holds_each_setting_for_a_block_of_steps():
    """A chain retargeted every step carries states of the settings it came from; so rows keep
    their settings for CHAIN_SETTING_STEPS steps, and then every chain restarts from the
    step's flow sample at the new setting."""
    from energyql.flows import FlowConfig, LatentFlow
    from energyql.target import StageTarget
    from energyql.training import StageObjective
    from energyql.training.objective import CHAIN_SETTING_STEPS as BLOCK

    def objective(chain_weight):
        quadratic = QuadraticEnergy([1.5, 0.0], [1.0, 0.0])
        energy = StageEnergy([SliderScaledEnergy(1.0, 0, quadratic, "(w in 0..4) * quadratic")],
                             [], None, [W])
        flow = LatentFlow(FlowConfig(dim=2, blocks=2, width=8, context_dim=1))
        return StageObjective(StageTarget(PointGenerator(), energy, flow),
                              TrainConfig(batch=32, chain_weight=chain_weight), 1)

    climbing = objective(1.0)
    settings = [climbing.step_settings(step, torch.Generator().manual_seed(step))
                for step in range(BLOCK + 1)]
    assert all(torch.equal(settings[0], s) for s in settings[:BLOCK])
    assert not torch.equal(settings[0], settings[BLOCK])
    assert settings[0].unique().numel() == 32 // 8  # groups of 8 rows share a setting
    # Without chains nothing needs holding: every step draws its own settings.
    plain = objective(0.0)
    assert not torch.equal(plain.step_settings(0, torch.Generator().manual_seed(0)),
                           plain.step_settings(1, torch.Generator().manual_seed(1)))
    stayed = []
    for step in range(BLOCK + 1):
        _, parts = climbing(step)
        stayed.append(bool((climbing.chains.z != parts.z).any()))
    assert any(stayed[1:BLOCK])  # within a block some proposals were refused
    assert not stayed[BLOCK]  # the restart: every chain is the step's flow sample


def test_each_chain_of_a_slider_stage_starts_from_the_pool_at_its_own_setting():
    from energyql.flows import FlowConfig, LatentFlow
    from energyql.target import StageTarget
    from energyql.training import StageObjective

    quadratic = QuadraticEnergy([1.5, 0.0], [1.0, 0.0])
    energy = StageEnergy([SliderScaledEnergy(1.0, 0, quadratic, "(w in 0..4) * quadratic")],
                         [], None, [W])
    flow = LatentFlow(FlowConfig(dim=2, blocks=2, width=8, context_dim=1))
    objective = StageObjective(StageTarget(PointGenerator(), energy, flow),
                               TrainConfig(batch=16, chain_weight=1.0), 1)
    pool = torch.randn(40, 2)
    # Row r's weights are split between pool samples 2r and 2r + 1 (two effective samples,
    # the least the seeding accepts).
    log_w = torch.full((16, 40), -50.0)
    log_w[torch.arange(16), 2 * torch.arange(16)] = 0.0
    log_w[torch.arange(16), 2 * torch.arange(16) + 1] = 0.0
    seeded = objective.seed_chains(pool, torch.zeros(40), torch.zeros(40, 0), log_w,
                                   torch.Generator().manual_seed(0),
                                   scaled=torch.zeros(40, 1))
    assert seeded
    chosen = [int(torch.nonzero((pool == row).all(1))[0]) for row in objective.chains.z]
    assert [c // 2 for c in chosen] == list(range(16))
