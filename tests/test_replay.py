"""Replay: every judged image as a weighted sample of the exact target (training/replay.py).

The toy target over 1-D latents is ``p ∝ N(0, 1)·exp(z)`` = N(1, 1): pointwise energy ``-z``.
"""

import math
from dataclasses import replace

import pytest
import torch

from energyql.flows import FlowConfig, LatentFlow
from energyql.target import StageTarget
from energyql.training import StageObjective, train_stage
from energyql.training.replay import MAX_BYTES, ReplayBuffer, replay_capacity
from tests.test_objective import FREE_SHARE, TOY, Step, _figures, exact_share_past_the_step
from tests.toys import PointGenerator, stage


def _normal_log_prob(z: torch.Tensor, mean: float = 0.0) -> torch.Tensor:
    return -0.5 * (z - mean) ** 2 - 0.5 * math.log(2 * math.pi)


def _add_draw(buffer: ReplayBuffer, z: torch.Tensor, drawn_mean: float,
              phi: torch.Tensor | None = None) -> None:
    buffer.add(z[:, None], _normal_log_prob(z), -z, phi if phi is not None
               else z.new_zeros(len(z), 0), _normal_log_prob(z, drawn_mean))


def test_resampled_rows_of_several_proposals_are_the_exact_targets():
    """Rows drawn from N(0, 1) and from N(2, 1), each weighted against its own proposal,
    resample to N(1, 1)."""
    g = torch.Generator().manual_seed(0)
    buffer = ReplayBuffer(40_000, 1, 0, "cpu")
    _add_draw(buffer, torch.randn(20_000, generator=g), 0.0)
    _add_draw(buffer, torch.randn(20_000, generator=g) + 2, 2.0)
    drawn, ess = buffer.sample(40_000, torch.zeros(0), g)
    assert abs(float(drawn.mean()) - 1) < 0.03 and abs(float(drawn.std()) - 1) < 0.03
    assert 10_000 < ess < 40_000


def test_a_draw_counts_by_its_effective_size():
    """Two draws with the same unnormalised weights but one with a degenerate spread: the
    degenerate draw gets its ESS/n share, the even one keeps its whole weight."""
    buffer = ReplayBuffer(8, 1, 0, "cpu")
    zeros = torch.zeros(4)
    buffer.add(zeros[:, None], zeros, zeros, zeros[:, None][:, :0], zeros)  # w = 1, 1, 1, 1
    buffer.add(zeros[:, None], zeros, torch.tensor([0.0, 30.0, 30.0, 30.0]),
               zeros[:, None][:, :0], zeros)                                # w ≈ 1, 0, 0, 0
    log_w = buffer.log_weights(torch.zeros(0))
    assert torch.allclose(log_w[:4], torch.zeros(4), atol=1e-6)
    assert float(log_w[4]) == pytest.approx(math.log(1 / 4), abs=1e-4)  # ESS/n = 1/4
    assert bool((log_w[5:] < -25).all())


def test_a_draw_that_found_nothing_adds_nothing_and_empty_rows_never_come_back():
    buffer = ReplayBuffer(16, 1, 0, "cpu")
    zeros = torch.zeros(4)
    buffer.add(zeros[:, None] + 5, zeros, zeros + 1e6, zeros[:, None][:, :0], zeros)
    buffer.add(zeros[:, None] - 5, zeros, zeros, zeros[:, None][:, :0], zeros)
    drawn, ess = buffer.sample(100, torch.zeros(0), torch.Generator().manual_seed(0))
    assert bool((drawn == -5).all()) and ess == pytest.approx(4)


def test_an_empty_buffer_draws_nothing():
    drawn, ess = ReplayBuffer(4, 3, 0, "cpu").sample(10, torch.zeros(0),
                                                      torch.Generator().manual_seed(0))
    assert drawn.shape == (0, 3) and ess == 0


def test_lambda_moves_the_weights_of_rows_already_kept():
    buffer = ReplayBuffer(200, 1, 1, "cpu")
    zeros = torch.zeros(200)
    phi = (torch.arange(200) < 100).float()[:, None]
    buffer.add(torch.arange(200.0)[:, None], zeros, zeros, phi, zeros)
    before = buffer.log_weights(torch.tensor([0.0]))
    after = buffer.log_weights(torch.tensor([math.log(3)]))
    assert float(before[0] - before[150]) == pytest.approx(0, abs=1e-6)
    assert float(after[0] - after[150]) == pytest.approx(math.log(3), abs=1e-5)


def test_no_row_weighs_more_than_the_root_of_the_rows_times_the_mean():
    """Truncated importance sampling: one row from a proposal's far tail, as heavy as the
    other 10,000 together, ends with about sqrt(n) times the mean weight."""
    n = 10_001
    buffer = ReplayBuffer(n, 1, 0, "cpu")
    zeros = torch.zeros(n)
    pointwise = zeros.clone()
    pointwise[0] = -math.log(n - 1)
    buffer.add(torch.arange(float(n))[:, None], zeros, pointwise, zeros[:, None][:, :0], zeros)
    weights = torch.softmax(buffer.log_weights(torch.zeros(0)).double(), 0)
    assert 0.015 < float(weights[0]) < 0.025  # 0.5 without the cap
    assert float(weights[1] / weights[2]) == pytest.approx(1.0)


def test_the_ring_keeps_the_newest_rows():
    buffer = ReplayBuffer(5, 1, 0, "cpu")
    for start in (0, 3, 6):
        z = torch.arange(start, start + 3, dtype=torch.float)
        buffer.add(z[:, None], z * 0, z * 0, z[:, None][:, :0], z * 0)
    assert sorted(buffer.z[:, 0].tolist()) == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert buffer.rows == 5 and int(buffer.filled) == 9 and int(buffer.draws) == 3
    big = torch.arange(8, dtype=torch.float)  # a draw larger than the ring: its newest rows
    buffer.add(big[:, None], big * 0, big * 0, big[:, None][:, :0], big * 0)
    assert sorted(buffer.z[:, 0].tolist()) == [3.0, 4.0, 5.0, 6.0, 7.0]


def test_the_capacity_is_bounded_in_bytes():
    assert replay_capacity(65_536, 32) == 65_536
    assert replay_capacity(65_536, 4 * 64 * 64) * 4 * 4 * 64 * 64 <= MAX_BYTES
    assert replay_capacity(10**12, 512) * 4 * 512 <= MAX_BYTES


def test_the_replay_term_is_minus_the_mean_log_density_of_resampled_rows():
    flow = LatentFlow(FlowConfig(dim=2, blocks=2, width=8))
    config = replace(TOY, batch=64, chain_weight=0.0, replay_weight=2.0)
    objective = StageObjective(StageTarget(PointGenerator(), stage(Step()), flow), config,
                               index=1)
    loss, parts = objective(0)
    plain = StageObjective(StageTarget(PointGenerator(), stage(Step()), flow),
                           replace(config, replay_weight=0.0), index=1)(0)[0]
    assert objective.replay is not None and objective.replay.rows == 64
    replayed = float((loss - plain).detach() / 2.0)
    assert replayed == pytest.approx(parts.losses["replay"], abs=1e-4)
    assert "replay.z" in objective.state()


def test_the_estimator_with_replay_converges_to_the_exact_target():
    """With replay (the start's pool in its buffer) beside the score function, the step's
    share heads for the exact target's (0.59; 0.51 after these 300 steps, as without replay:
    the small flow is still sharpening the step), not a tempered one, and x1 stays free."""
    config = replace(TOY, steps=300, lr=1e-2, chain_weight=0.0, replay_weight=1.0,
                     warm_start_samples=4096, warm_start_steps=0)
    sampler, log = train_stage(PointGenerator(), stage(Step()), config, progress=False)
    share, free, std = _figures(sampler)
    assert abs(share - exact_share_past_the_step()) < 0.1, share
    assert abs(free - FREE_SHARE) < 0.02 and abs(std - 1) < 0.05, (free, std)
    assert log.closeness["ess_fraction"] > 0.75, log.closeness


def test_a_resumed_run_with_replay_retraces_the_uninterrupted_one(tmp_path):
    from energyql.training import TrainConfig
    from tests.test_objective import assert_resume_retraces

    assert_resume_retraces(tmp_path, TrainConfig(
        steps=30, batch=32, blocks=2, width=8, checkpoint_every=10, chain_weight=0.0,
        replay_weight=1.0, replay_capacity=256))


def test_replay_asked_for_with_no_room_for_a_batch_says_it_is_off():
    flow = LatentFlow(FlowConfig(dim=2, blocks=1, width=4))
    config = replace(TOY, replay_weight=1.0, replay_capacity=8, batch=16)
    with pytest.warns(UserWarning, match="replay is off for stage 1: its buffer holds 8 rows"):
        objective = StageObjective(StageTarget(PointGenerator(), stage(Step()), flow), config,
                                   index=1)
    assert objective.replay is None
