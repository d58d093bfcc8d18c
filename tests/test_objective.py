"""The training objective: each part's gradient, and the exact target as its fixed point.

The toy: 2-D points with a N(0, I) prior and a *step* energy (height 5 where x0 < 1.5, 0 past
it) whose gradient is zero everywhere, as a classifier's is inside a class. Its exact target
is known in closed form: past the step with probability Φ̄(1.5) / Z, x1 untouched.
"""

import math
from dataclasses import replace

import pytest
import torch

from energyql.distributed import Group
from energyql.energies.base import EnergyTerm
from energyql.energies.constraint import ConstraintEnergy
from energyql.energies.lower import StageEnergy
from energyql.flows import FlowConfig, LatentFlow
from energyql.target import StageTarget, closeness
from energyql.training import StageObjective, TrainConfig, step_generator, train_stage
from energyql.training.objective import leave_one_out, split_flat
from tests.toys import PointGenerator, QuadraticEnergy, SideAttribute, stage

HEIGHT = 3.0
EDGE = 1.5
TAIL = 0.5 * math.erfc(EDGE / math.sqrt(2))  # Φ̄(1.5) = 0.0668: the prior's mass past the step


def exact_share_past_the_step(height: float = HEIGHT) -> float:
    """The exact target's mass past the step: Φ̄ / (Φ̄ + Φ·exp(-height))."""
    return TAIL / (TAIL + (1 - TAIL) * math.exp(-height))


class Step(EnergyTerm):
    """``height`` where x0 < 1.5 and 0 past it: a judge-like term with no gradient."""

    flat = True

    def __init__(self, height: float = HEIGHT):
        super().__init__()
        self.height = height
        self.text = "step"

    def forward(self, features):
        return self.height * (features.images[:, 0] < EDGE).float()


def _perturbed_flow(seed: int = 3) -> LatentFlow:
    flow = LatentFlow(FlowConfig(dim=2, blocks=2, width=8, seed=seed))
    with torch.no_grad():  # not the identity, so that log q depends on every trained weight
        for p in flow.parameters():
            if p.requires_grad:  # (the fixed rotations must stay orthogonal)
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    return flow


def _figures(sampler, n: int = 40000) -> tuple[float, float, float]:
    """Share past the step, share of x1 > 1 (a free attribute), x1's std."""
    with torch.no_grad():
        x = sampler.decode(torch.randn(n, 2, generator=torch.Generator().manual_seed(1)))
    return (float((x[:, 0] > EDGE).float().mean()), float((x[:, 1] > 1).float().mean()),
            float(x[:, 1].std()))


FREE_SHARE = 0.5 * math.erfc(1 / math.sqrt(2))  # P(x1 > 1) under N(0, 1): 0.1587
TOY = TrainConfig(steps=300, batch=256, lr=5e-3, blocks=3, width=32)


def test_flat_terms_are_the_judges_and_temper_scales_only_pointwise_terms():
    constraint = ConstraintEnergy("uniform", ("side",), (0.5, 0.5), "uniform(side)")
    constraint.lam.copy_(torch.tensor([0.7, -0.7]))
    energy = StageEnergy([Step(), QuadraticEnergy([0.0, 0.0], [1.0, 1.0])], [constraint],
                         SideAttribute())
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    _, parts = energy(x)
    smooth, flat = split_flat(parts, energy)
    assert torch.allclose(smooth, parts["quadratic"])
    assert torch.allclose(flat, parts["step"] + parts["uniform(side)"])
    smooth3, flat3 = split_flat(parts, energy, temper=3.0)
    assert torch.allclose(smooth3, 3 * parts["quadratic"])
    assert torch.allclose(flat3, 3 * parts["step"] + parts["uniform(side)"])  # λ keeps weight 1


def test_leave_one_out_baseline_is_the_mean_of_the_others():
    values = torch.tensor([1.0, 2.0, 6.0])
    assert torch.allclose(leave_one_out(values, Group()), torch.tensor([-3.0, -1.5, 4.5]))


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_flat_terms_get_pathwise_and_score_function_shares_that_add_to_one(share):
    """The loss's gradient is (1 - c)·pathwise + c·score function of the flat terms, plus the
    pathwise gradient of the prior and log-determinant: weight 1 in all, never more."""
    energy = stage(QuadraticEnergy([1.0, 0.0], [1.0, 1.0]), Step())
    energy.pointwise[0].flat = True  # a smooth flat term, so both estimators see it
    flow = _perturbed_flow()
    config = replace(TOY, batch=64, score_share=share, chain_weight=0.0)
    loss, _ = StageObjective(StageTarget(PointGenerator(), energy, flow), config, index=1)(4)
    first = next(flow.parameters())
    (grad,) = torch.autograd.grad(loss, [first])
    eps = torch.randn(64, 2, generator=step_generator(config.seed, 1, 4))
    z, logdet = flow(eps)
    total, _ = energy(z)
    pathwise = (-PointGenerator().log_prior(z) + (1 - share) * total - logdet).mean()
    values = total.detach()
    advantage = (values - values.mean()) * 64 / 63
    score = share * (advantage * flow.log_prob(z.detach())).mean()
    (expected,) = torch.autograd.grad(pathwise + score, [first])
    assert torch.allclose(grad, expected, atol=1e-5) and grad.abs().sum() > 0


def test_the_forward_term_is_self_normalised_over_flow_and_defensive_base_rows():
    energy = stage(Step())
    flow = _perturbed_flow()
    config = replace(TOY, batch=64, score_share=0.0, forward_weight=1.0, defensive=0.25,
                     chain_weight=0.0)
    objective = StageObjective(StageTarget(PointGenerator(), energy, flow), config, index=1)
    assert objective.defensive == 16
    loss, parts = objective(7)
    assert parts.defensive_images == 16 and "forward" in parts.losses
    plain = StageObjective(StageTarget(PointGenerator(), energy, flow),
                           replace(config, forward_weight=0.0), index=1)(7)[0]
    # By hand: the flow's 64 rows, then 16 base rows drawn after them from the step's stream.
    generator = step_generator(config.seed, 1, 7)
    eps = torch.randn(64, 2, generator=generator)
    u = torch.randn(16, 2, generator=generator)
    with torch.no_grad():
        z, logdet = flow(eps)
    rows = torch.cat([z, u])
    log_q = flow.log_prob(rows)
    prior = PointGenerator().log_prior(rows)
    log_target = prior - energy(rows)[0]
    log_m = torch.logaddexp(log_q.detach() + math.log(0.75), prior + math.log(0.25))
    weights = torch.softmax(log_target - log_m, 0)
    forward = -(weights * log_q).sum()
    assert torch.allclose(loss, plain + forward, atol=1e-5)


@pytest.mark.parametrize("settings", [{}, {"forward_weight": 1.0, "defensive": 0.1}],
                         ids=["defaults", "forward-term"])
def test_the_estimator_converges_to_the_exact_target_not_a_tempered_one(settings):
    """The step has no gradient anywhere: reverse KL's slope alone never moves mass past it
    (share 0.07); the default estimator (score function at weight 1, score climbing) does, and
    heads for the exact target's share (0.59; measured 0.52 after these 600 steps, the flow
    still sharpening the step) where a target tempered by 4 would put 0.99998, leaving the
    free coordinate x1 standard normal."""
    config = replace(TOY, steps=600, lr=1e-2, **settings)
    assert config.score_share == 1.0 and config.chain_weight == 1.0 and config.temper == 1.0
    sampler, log = train_stage(PointGenerator(), stage(Step()), config, progress=False)
    share, free, std = _figures(sampler)
    assert abs(share - exact_share_past_the_step()) < 0.1, share
    assert abs(free - FREE_SHARE) < 0.02 and abs(std - 1) < 0.05, (free, std)
    assert log.closeness["ess_fraction"] > 0.6 and log.closeness["kl"] < 0.2, log.closeness


def test_pathwise_alone_cannot_move_mass_across_a_flat_energy():
    sampler, _ = train_stage(PointGenerator(), stage(Step()),
                             replace(TOY, steps=100, score_share=0.0, chain_weight=0.0),
                             progress=False)
    share, _, _ = _figures(sampler)
    assert share < 0.12


def test_temper_trains_towards_the_tempered_target_only_when_asked():
    sampler, log = train_stage(PointGenerator(), stage(Step()), replace(TOY, temper=4.0),
                               progress=False)
    share, _, _ = _figures(sampler)
    assert share > 0.98 and exact_share_past_the_step(4 * HEIGHT) > 0.999
    # Closeness is measured against the exact target. KL̂ sees only where the flow samples,
    # so it cannot see the mass the tempered flow dropped below the step (it is a lower
    # bound): the drift figures on ground truth are what catch that.
    assert log.closeness["samples"] == TOY.closeness_samples


def test_closeness_of_the_base_to_the_step_target_matches_its_closed_form():
    """For q = p0: ESS/N = Z² / E[w²] and KL(q ‖ p) = E_q[E] + log Z."""
    target = StageTarget(PointGenerator(), stage(Step()), LatentFlow(FlowConfig(dim=2, blocks=2,
                                                                                width=8)))
    figures = closeness(target.log_weights(100_000, torch.Generator().manual_seed(0)))
    z = TAIL + (1 - TAIL) * math.exp(-HEIGHT)
    second = TAIL + (1 - TAIL) * math.exp(-2 * HEIGHT)
    assert abs(figures["ess_fraction"] - z * z / second) < 0.005
    assert abs(figures["kl"] - (HEIGHT * (1 - TAIL) + math.log(z))) < 0.03
    assert figures["samples"] == 100_000


def test_the_chains_move_by_a_step_that_leaves_the_exact_target_invariant():
    """With the flow held fixed (the identity: q = p0), the chains' states are Metropolis-
    Hastings samples of the exact target: after enough steps their share past the step is the
    target's, whatever the flow."""
    flow = LatentFlow(FlowConfig(dim=2, blocks=2, width=8))
    config = replace(TOY, batch=512, score_share=0.0, chain_weight=1.0)
    objective = StageObjective(StageTarget(PointGenerator(), stage(Step()), flow), config,
                               index=1)
    with torch.no_grad():
        for step in range(150):
            objective(step)
    chains = objective.chains
    assert bool(chains.ready)
    share = float((chains.z[:, 0] > EDGE).float().mean())
    assert abs(share - exact_share_past_the_step()) < 0.06, share
    # x1 is free: the chains leave it standard normal
    assert abs(float((chains.z[:, 1] > 1).float().mean()) - FREE_SHARE) < 0.05


def test_the_chain_term_is_minus_the_mean_log_density_of_the_chains_new_states():
    flow = _perturbed_flow()
    config = replace(TOY, batch=64, score_share=0.0, chain_weight=2.0)
    objective = StageObjective(StageTarget(PointGenerator(), stage(Step()), flow), config,
                               index=1)
    objective(0)  # seeds the chains with the first batch
    before = objective.chains.z.clone()
    loss, parts = objective(1)
    plain = StageObjective(StageTarget(PointGenerator(), stage(Step()), flow),
                           replace(config, chain_weight=0.0), index=1)(1)[0]
    after = objective.chains.z
    moved = (after != before).any(1)
    assert 0 < int(moved.sum()) < 64  # some proposals accepted, some not
    expected = plain - 2.0 * flow.log_prob(after).mean()
    assert torch.allclose(loss, expected, atol=1e-5)
    expected_term = float(-flow.log_prob(after).mean().detach())
    assert parts.losses["chains"] == pytest.approx(expected_term, abs=1e-4)


def test_the_start_pool_seeds_the_chains_in_the_targets_proportions():
    config = replace(TOY, steps=1, batch=256, chain_weight=1.0, warm_start_samples=8192,
                     warm_start_steps=0)
    seen = {}
    original = StageObjective.seed_chains

    def spy(self, *args):
        seen["seeded"] = original(self, *args)
        seen["z"] = self.chains.z.clone()
        return seen["seeded"]

    StageObjective.seed_chains = spy
    try:
        train_stage(PointGenerator(), stage(Step()), config, progress=False)
    finally:
        StageObjective.seed_chains = original
    assert seen["seeded"]
    share = float((seen["z"][:, 0] > EDGE).float().mean())
    assert abs(share - exact_share_past_the_step()) < 0.08, share


def test_a_resumed_run_with_chains_retraces_the_uninterrupted_one(tmp_path):
    assert_resume_retraces(tmp_path, TrainConfig(steps=30, batch=32, blocks=2, width=8,
                                                 checkpoint_every=10, chain_weight=1.0))


def test_a_resumed_run_whose_chains_came_from_a_start_pool_retraces_the_uninterrupted_one(
        tmp_path):
    # The pool is judged once, before step 0; a resumed run restores the chains from the
    # checkpoint instead of judging it again (the shapes kill-9 test runs without a pool).
    assert_resume_retraces(tmp_path, TrainConfig(steps=30, batch=32, blocks=2, width=8,
                                                 checkpoint_every=10, chain_weight=1.0,
                                                 warm_start_samples=512))


def assert_resume_retraces(tmp_path, config: TrainConfig) -> None:
    """A stage killed at step 25 and resumed ends with the uninterrupted run's flow."""
    from tests.test_train import Crash, CrashingQuadratic

    args = ([1.0, 0.5], [2.0, 1.0])
    whole, _ = train_stage(PointGenerator(), stage(QuadraticEnergy(*args)), config,
                           progress=False)
    with pytest.raises(Crash):
        train_stage(PointGenerator(), stage(CrashingQuadratic(*args, crash_at=25)), config,
                    checkpoint_dir=tmp_path, progress=False)
    resumed, _ = train_stage(PointGenerator(), stage(QuadraticEnergy(*args)), config,
                             checkpoint_dir=tmp_path, resume=True, progress=False)
    for p, q in zip(whole.flow.state_dict().values(), resumed.flow.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6)


def test_smooth_terms_take_the_score_function_only_when_asked():
    """``smooth_score_share`` moves a smooth term's gradient (CLIP's, say) to the score
    function as well, for generators that flatten it; weight 1 still."""
    energy = stage(QuadraticEnergy([1.0, 0.0], [1.0, 1.0]))
    flow = _perturbed_flow()
    config = replace(TOY, batch=64, chain_weight=0.0, smooth_score_share=1.0)
    loss, _ = StageObjective(StageTarget(PointGenerator(), energy, flow), config, index=1)(4)
    first = next(flow.parameters())
    (grad,) = torch.autograd.grad(loss, [first])
    eps = torch.randn(64, 2, generator=step_generator(config.seed, 1, 4))
    z, logdet = flow(eps)
    total, _ = energy(z)
    pathwise = (-PointGenerator().log_prior(z) - logdet).mean()
    advantage = (total.detach() - total.detach().mean()) * 64 / 63
    score = (advantage * flow.log_prob(z.detach())).mean()
    (expected,) = torch.autograd.grad(pathwise + score, [first])
    assert torch.allclose(grad, expected, atol=1e-5)
