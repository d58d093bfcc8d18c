"""Every flow configuration through the same checks: inverse, log-det, gradients, round trip."""

import pytest
import torch

from energyql.flows import FlowConfig, LatentFlow, standard_normal_log_prob

CONFIGS = [
    FlowConfig(dim=4, blocks=2, width=16),
    FlowConfig(dim=7, blocks=3, width=32, seed=3),
    FlowConfig(dim=6, context_dim=2, blocks=2, width=16),
]


def _perturbed(config: FlowConfig) -> LatentFlow:
    flow = LatentFlow(config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in flow.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=generator))
    return flow


def _context(config, n):
    return torch.randn(n, config.context_dim) if config.context_dim else None


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_inverse_recovers_input_and_logdets_cancel(config):
    flow = _perturbed(config)
    eps, ctx = torch.randn(16, config.dim), _context(config, 16)
    z, logdet = flow(eps, ctx)
    back, inverse_logdet = flow.inverse(z, ctx)
    assert torch.allclose(back, eps, atol=1e-5)
    assert torch.allclose(logdet, -inverse_logdet, atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_logdet_matches_autograd_jacobian(config):
    flow = _perturbed(config).double()
    eps = torch.randn(3, config.dim, dtype=torch.float64)
    ctx = _context(config, 3)
    ctx = ctx.double() if ctx is not None else None
    _, logdet = flow(eps, ctx)
    for i in range(3):
        c = ctx[i:i + 1] if ctx is not None else None
        jac = torch.autograd.functional.jacobian(lambda x, c=c: flow(x[None], c)[0][0], eps[i])
        assert torch.allclose(torch.linalg.slogdet(jac)[1], logdet[i], atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_gradients_reach_every_trainable_parameter(config):
    flow = _perturbed(config)
    z, logdet = flow(torch.randn(8, config.dim), _context(config, 8))
    (z.pow(2).sum() - logdet.sum()).backward()
    for name, p in flow.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_state_dict_round_trip_gives_identical_outputs(config):
    flow = _perturbed(config)
    copy = LatentFlow(config)
    copy.load_state_dict(flow.state_dict())
    eps, ctx = torch.randn(5, config.dim), _context(config, 5)
    assert torch.equal(flow(eps, ctx)[0], copy(eps, ctx)[0])


def test_initial_flow_preserves_the_standard_normal():
    # Zero-initialised couplings leave only rotations: N(0, I) maps to N(0, I), log-det 0.
    flow = LatentFlow(FlowConfig(dim=5, blocks=3, width=8))
    eps = torch.randn(4000, 5, generator=torch.Generator().manual_seed(0))
    z, logdet = flow(eps)
    assert logdet.abs().max() < 1e-5
    assert torch.allclose(z.norm(dim=1), eps.norm(dim=1), atol=1e-4)
    assert torch.allclose(flow.log_prob(z), standard_normal_log_prob(z), atol=1e-4)


def test_same_seed_builds_the_same_flow_and_another_seed_does_not():
    a, b = LatentFlow(FlowConfig(dim=4, seed=1)), LatentFlow(FlowConfig(dim=4, seed=1))
    c = LatentFlow(FlowConfig(dim=4, seed=2))
    eps = torch.randn(3, 4)
    assert torch.equal(a(eps)[0], b(eps)[0])
    assert not torch.allclose(a(eps)[0], c(eps)[0])
