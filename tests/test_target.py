"""StageTarget: proposals with their log-ratio, measurements, λ packing and the ESS."""

import math

import pytest
import torch

from energyql.energies.constraint import ConstraintEnergy
from energyql.energies.lower import StageEnergy
from energyql.errors import SamplerError
from energyql.flows import FlowConfig, LatentFlow
from energyql.sampler import Artifact, StageSampler, manifest_for
from energyql.target import StageTarget, effective_sample_size
from tests.toys import PointGenerator, QuadraticEnergy, SideAttribute


def _flow(seed: int = 0) -> LatentFlow:
    flow = LatentFlow(FlowConfig(dim=2, blocks=2, width=8, seed=seed))
    with torch.no_grad():  # a flow that is not the identity
        for p in (p for p in flow.parameters() if p.requires_grad):
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    return flow.eval()


def _energy() -> StageEnergy:
    side = ConstraintEnergy("uniform", ("side",), (0.5, 0.5), "uniform(side)")
    skew = ConstraintEnergy("dist", ("side",), (0.2, 0.8), "dist(side, left=0.2, right=0.8)")
    return StageEnergy([QuadraticEnergy([1.0, 0.0], [1.0, 1.0])], [side, skew], SideAttribute())


def test_base_proposals_are_the_noise_with_log_ratio_zero():
    target = StageTarget(PointGenerator(), _energy())
    u, log_ratio = target.propose(5, torch.Generator().manual_seed(1), use_flow=False)
    assert torch.equal(u, torch.randn(5, 2, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(log_ratio, torch.zeros(5))


def test_flow_proposals_carry_log_p0_minus_the_flows_exact_log_density():
    flow = _flow()
    target = StageTarget(PointGenerator(), _energy(), flow)
    with torch.no_grad():
        u, log_ratio = target.propose(64, torch.Generator().manual_seed(2))
        # The same quantity through the inverse pass: log p0(u) - log q(u).
        expected = PointGenerator().log_prior(u) - flow.log_prob(u)
    assert not torch.allclose(log_ratio, torch.zeros(64), atol=1e-3)
    assert torch.allclose(log_ratio, expected, atol=1e-4)


def test_rows_select_a_ranks_shard_of_the_same_noise():
    target = StageTarget(PointGenerator(), _energy(), _flow())
    whole, _ = target.propose(8, torch.Generator().manual_seed(3))
    part, _ = target.propose(8, torch.Generator().manual_seed(3), rows=slice(4, 8))
    assert torch.equal(part, whole[4:])


def test_measure_gives_the_pointwise_energy_and_the_constraints_features():
    energy = _energy()
    target = StageTarget(PointGenerator(), energy)
    x = torch.tensor([[1.0, 0.0], [-2.0, 1.0]])
    pointwise, phi = target.measure(x, None)
    assert torch.allclose(pointwise, torch.tensor([0.0, 5.0]))
    assert phi.shape == (2, 4)  # two constraints of two values each
    assert torch.allclose(phi[:, :2], phi[:, 2:])
    assert torch.allclose(phi.sum(1), torch.full((2,), 2.0))
    quadratic = QuadraticEnergy([0.0, 0.0], [1.0, 1.0])
    no_constraints = StageTarget(PointGenerator(), StageEnergy([quadratic], []))
    assert no_constraints.measure(x, None)[1] is None


def test_lambda_is_packed_and_unpacked_in_constraint_order():
    energy = _energy()
    target = StageTarget(PointGenerator(), energy)
    constraints = target.constraints()
    constraints.set_lambda(torch.tensor([1.0, 2.0, 3.0, 4.0]),
                           offset=torch.tensor([0.5, 0.0, 0.0, -0.5]))
    assert energy.constraints[0].lam.tolist() == [1.0, 2.0]
    assert energy.constraints[1].lam.tolist() == [3.0, 4.0]
    assert energy.constraints[1].offset.tolist() == [0.0, -0.5]
    assert target.lam().tolist() == [1.0, 2.0, 3.0, 4.0]
    assert constraints.packed("offset").tolist() == [0.5, 0.0, 0.0, -0.5]
    assert constraints.exact().tolist() == [0.5, 2.0, 3.0, 4.5]
    assert target.moments_target().tolist() == pytest.approx([0.5, 0.5, 0.2, 0.8])
    assert [p.tolist() for p in constraints.split(torch.arange(4.0))] == [[0.0, 1.0], [2.0, 3.0]]
    # Every view goes through a checkpoint's state and back.
    state = {k: v.clone() for k, v in constraints.state().items()}
    constraints.set_lambda(torch.zeros(4), torch.zeros(4), torch.zeros(4))
    constraints.load_state(state)
    assert target.lam().tolist() == [1.0, 2.0, 3.0, 4.0]
    assert constraints.exact().tolist() == [0.5, 2.0, 3.0, 4.5]
    # The total energy subtracts λ·φ from the pointwise part.
    x = torch.tensor([[0.5, 0.0]])
    pointwise, phi = target.measure(x, None)
    assert torch.allclose(target.total(pointwise, phi), pointwise - phi @ target.lam())
    assert torch.allclose(target.energy_of(x, None), target.total(pointwise, phi))


def test_effective_sample_size_of_equal_and_degenerate_weights():
    assert effective_sample_size(torch.zeros(100)) == pytest.approx(100)
    assert effective_sample_size(torch.tensor([0.0, -1e4, -1e4])) == pytest.approx(1.0)
    # Two equal weights and two negligible ones: ESS 2.
    assert effective_sample_size(torch.tensor([math.log(3), math.log(3), -50.0, -50.0])) \
        == pytest.approx(2.0)


def test_the_target_of_an_artifact_is_its_last_stage_over_its_base():
    base = PointGenerator()
    first = StageSampler(base, _flow(1), 1, "a")
    second = StageSampler(first, _flow(2), 2, "b")
    target = StageTarget.of(Artifact(second, manifest_for(second, source="a | then b")), None,
                            device="cpu", need_flow=True)
    assert target.base is first and target.flow is second.flow
    plain = StageTarget.of(base, None, device="cpu")
    assert plain.flow is None and plain.base is base
    with pytest.raises(SamplerError, match="needs a trained flow"):
        StageTarget.of(base, None, device="cpu", need_flow=True)
    with pytest.raises(SamplerError, match="expected a Generator"):
        StageTarget.of("not a generator", None, device="cpu")
