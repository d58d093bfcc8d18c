"""Conditional stages: context sampling, the pose energy, the paired keep energy, artifacts."""

import pytest
import torch

import energyql as eq
from energyql.energies.base import Features
from energyql.energies.conditional import (
    ContextParam,
    KeepEnergy,
    PoseEnergy,
    identity_distance,
    normalize_context,
    sample_context,
)
from energyql.energies.lower import StageEnergy
from energyql.sampler import Artifact, manifest_for
from energyql.training import TrainConfig, train_stage
from tests.toys import PointGenerator

PARAM = ContextParam("pose", "px", -1.0, 1.0)


class ReadX(torch.nn.Module):
    def forward(self, points):
        return {"px": points[:, 0]}


class EmbedY(torch.nn.Module):
    def forward(self, points):
        return torch.stack([points[:, 1], torch.ones_like(points[:, 1])], 1)


def _energy():
    return StageEnergy([PoseEnergy(ReadX(), [PARAM], [0], "pose(px in -1..1)", tolerance=0.05),
                        KeepEnergy(EmbedY(), "keep(identity)")], [], None, [PARAM], paired=True)


def test_context_is_drawn_inside_its_range_and_normalised_to_unit_interval():
    params = [PARAM, ContextParam("pose", "yaw", -30, 30)]
    c = sample_context(params, 1000, torch.Generator().manual_seed(0))
    assert c.shape == (1000, 2) and (c[:, 1].abs() <= 30).all() and c[:, 1].std() > 10
    n = normalize_context(params, c)
    top = normalize_context(params, torch.tensor([[1.0, 30.0]]))
    assert n.abs().max() <= 1 and torch.allclose(top, torch.ones(1, 2))


def test_pose_energy_is_zero_at_the_request_and_keep_energy_compares_pairs():
    points = torch.tensor([[0.5, 2.0], [0.0, -1.0]])
    pose = PoseEnergy(ReadX(), [PARAM], [0], "pose", tolerance=0.05)
    e = pose(Features(points, context=torch.tensor([[0.5], [1.0]])))
    assert e[0] == 0 and e[1] == pytest.approx(0.5 * (1.0 / 0.1) ** 2)
    keep = KeepEnergy(EmbedY(), "keep", scale=1.0)
    same = keep(Features(points, reference_images=points.clone()))
    other = keep(Features(points, reference_images=points.flip(0)))
    assert torch.allclose(same, torch.zeros(2), atol=1e-6) and (other > 0.1).all()


def test_conditional_flow_follows_the_request_and_keeps_identity(tmp_path):
    config = TrainConfig(steps=300, batch=128, lr=3e-3, blocks=4, width=64)
    plane = PointGenerator()
    plane.catalog = "points"  # a world of the test's own: its texts are not checked on load
    sampler, _ = train_stage(plane, _energy(), config, source="pose", progress=False)
    eps = torch.randn(400, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        rows = torch.stack([sampler.decode(eps, torch.full((400, 1), v)) for v in (-0.6, 0.0, 0.6)])
    for value, points in zip((-0.6, 0.0, 0.6), rows):
        assert (points[:, 0] - value).abs().mean() < 0.1
    within = (rows[0, :, 1] - rows[2, :, 1]).abs().mean()
    between = (rows[0, :, 1] - rows[0, :, 1].roll(1)).abs().mean()
    assert within < 0.5 * between
    # Save and load keep the context parameters and the flow.
    manifest = manifest_for(sampler, source="pose")
    Artifact(sampler, manifest).save(tmp_path)
    loaded = eq.load(tmp_path, gen=plane)
    assert loaded.sampler.context_params == [PARAM]
    assert torch.allclose(loaded.sample(5, seed=1, context={"px": 0.3}),
                          Artifact(sampler, manifest).sample(5, seed=1, context={"px": 0.3}))
    with pytest.raises(eq.UsageError, match="unknown context parameter"):
        loaded.sample(2, context={"yaw": 3})


def test_identity_distance_matches_promptgen():
    a = torch.tensor([[1.0, 0.0]])
    assert identity_distance(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert identity_distance(a, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(2 ** 0.5)
