import math

import pytest
import torch

from energyql.errors import TrainingError
from energyql.trainer import TrainConfig, train_stage
from tests.toys import BrokenEnergy, PointGenerator, QuadraticEnergy, stage

SMALL = TrainConfig(steps=200, batch=256, lr=5e-3, blocks=3, width=32)


def _gaussian_kl(m0, v0, m1, v1):
    """KL(N(m0, diag v0) || N(m1, diag v1))."""
    return float(0.5 * (v0 / v1 + (m1 - m0) ** 2 / v1 - 1 + torch.log(v1 / v0)).sum())


def test_trainer_converges_to_a_known_gaussian_target():
    torch.manual_seed(0)
    energy = QuadraticEnergy([1.5, -1.0], [3.0, 0.5])
    sampler, log = train_stage(PointGenerator(), stage(energy), SMALL, progress=False)
    with torch.no_grad():
        x = sampler.decode(torch.randn(20000, 2, generator=torch.Generator().manual_seed(1)))
    mean, var = energy.exact_target()
    kl = _gaussian_kl(x.mean(0), x.var(0), mean, var)
    assert kl < 0.02, (x.mean(0), x.var(0), mean, var)
    assert log.loss[-1] < log.loss[0]


def test_training_is_deterministic_for_a_seed():
    config = TrainConfig(steps=15, batch=32, blocks=2, width=8)
    a, _ = train_stage(PointGenerator(), stage(QuadraticEnergy([1.0, 0.0], [1.0, 1.0])), config,
                       progress=False)
    b, _ = train_stage(PointGenerator(), stage(QuadraticEnergy([1.0, 0.0], [1.0, 1.0])), config,
                       progress=False)
    for p, q in zip(a.flow.state_dict().values(), b.flow.state_dict().values()):
        assert torch.equal(p, q)


class Crash(Exception):
    pass


class CrashingQuadratic(QuadraticEnergy):
    """Dies on its n-th call, as a run killed mid-training would."""

    def __init__(self, *args, crash_at: int):
        super().__init__(*args)
        self.calls, self.crash_at = 0, crash_at

    def forward(self, features):
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash
        return super().forward(features)


def test_resume_reaches_the_same_state_as_an_uninterrupted_run(tmp_path):
    config = TrainConfig(steps=30, batch=32, blocks=2, width=8, checkpoint_every=10)
    args = ([1.0, 0.5], [2.0, 1.0])
    whole, _ = train_stage(PointGenerator(), stage(QuadraticEnergy(*args)), config, progress=False)
    with pytest.raises(Crash):  # dies during step 25; the last checkpoint is at step 20
        train_stage(PointGenerator(), stage(CrashingQuadratic(*args, crash_at=25)), config,
                    checkpoint_dir=tmp_path, progress=False)
    resumed, log = train_stage(PointGenerator(), stage(QuadraticEnergy(*args)), config,
                               checkpoint_dir=tmp_path, resume=True, progress=False)
    assert log.steps == 30 and len(log.loss) == 30
    for p, q in zip(whole.flow.state_dict().values(), resumed.flow.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6)


def test_a_non_finite_step_is_skipped_and_never_reaches_the_weights():
    config = TrainConfig(steps=6, batch=8, blocks=2, width=8)
    broken = BrokenEnergy(bad_calls={3})
    sampler, log = train_stage(PointGenerator(), stage(broken), config, progress=False)
    assert log.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in sampler.flow.parameters())


def test_repeated_non_finite_loss_stops_with_the_culprit_named():
    config = TrainConfig(steps=50, batch=8, blocks=2, width=8, max_bad_steps=4)
    with pytest.raises(TrainingError, match=r"broken\(term\)") as info:
        train_stage(PointGenerator(), stage(QuadraticEnergy([0.0, 0.0], [1.0, 1.0]), BrokenEnergy()),
                    config, progress=False)
    assert "4 steps" in str(info.value)


def test_initial_flow_samples_the_base_distribution():
    config = TrainConfig(steps=0, batch=8, blocks=3, width=8)
    sampler, _ = train_stage(PointGenerator(), stage(QuadraticEnergy([0.0, 0.0], [1.0, 1.0])),
                             config, progress=False)
    with torch.no_grad():
        x = sampler.decode(torch.randn(20000, 2, generator=torch.Generator().manual_seed(0)))
    assert x.mean(0).abs().max() < 0.03 and (x.var(0) - 1).abs().max() < 0.05
    assert math.isfinite(float(x.sum()))
