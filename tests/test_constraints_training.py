"""λ fitting inside training: the stage's final distribution meets the target moments."""

import torch

from energyql.energies.constraint import ConstraintEnergy
from energyql.energies.lower import StageEnergy
from energyql.training import TrainConfig, train_stage
from tests.toys import PointGenerator, QuadraticEnergy, SideAttribute


def _share_right(sampler, n=20000):
    with torch.no_grad():
        x = sampler.decode(torch.randn(n, 2, generator=torch.Generator().manual_seed(5)))
    return float(SideAttribute()(x)["side"].exp()[:, 1].mean())


CONFIG = TrainConfig(steps=400, batch=256, lr=5e-3, blocks=3, width=32, moment_samples=8192,
                     refit_every=50, refit_samples=4096)


def test_constraint_alone_moves_the_distribution_to_its_target():
    constraint = ConstraintEnergy("dist", ("side",), (0.2, 0.8), "dist(side, left=0.2, right=0.8)")
    energy = StageEnergy([], [constraint], SideAttribute())
    sampler, log = train_stage(PointGenerator(), energy, CONFIG, progress=False)
    assert abs(_share_right(sampler) - 0.8) < 0.04
    assert log.fits and log.fits[0].max_moment_error < 1e-3


def test_constraint_with_pointwise_energy_targets_the_final_distribution():
    # The quadratic pulls points left (mean -1); the constraint must still give 50/50.
    constraint = ConstraintEnergy("uniform", ("side",), (0.5, 0.5), "uniform(side)")
    energy = StageEnergy([QuadraticEnergy([-1.0, 0.0], [2.0, 0.0])], [constraint], SideAttribute())
    sampler, log = train_stage(PointGenerator(), energy, CONFIG, progress=False)
    assert abs(_share_right(sampler) - 0.5) < 0.03
    assert len(log.fits) == 8  # at the start, then refits every 50 steps but the last
    assert log.fits[-1].flow_max_moment_error < 0.05
