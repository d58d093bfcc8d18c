"""The rational-quadratic spline and its couplings (energyql.splines), checked against zuko's
spline as an independent implementation, and at the edges: the bound, the tails, zero knots."""

import math

import pytest
import torch

from energyql.splines import MIN_BIN, MIN_SLOPE, SPLINE_BOUND, SplineINN, rational_quadratic

BINS = 8


LIMIT = -math.log(MIN_SLOPE)  # the log-slopes' soft bound; bins' logits take half of it


def _unclamped(value: torch.Tensor, limit: float) -> torch.Tensor:
    """The number that the spline's soft clamp maps onto ``value``."""
    assert bool((value.abs() < limit).all())
    return value / (1 - value.abs() / limit)


def _raw_sizes(sizes: torch.Tensor) -> torch.Tensor:
    """The unconstrained numbers whose bins are ``sizes`` (fractions summing to 1)."""
    logits = torch.log((sizes - MIN_BIN) / (1 - MIN_BIN * BINS))
    return _unclamped(logits - logits.mean(-1, keepdim=True), LIMIT / 2)


def _zuko_and_ours(n: int, seed: int):
    """A zuko spline with random knots, and the same knots in our parametrisation (only this
    check needs zuko; the others run without it)."""
    zuko = pytest.importorskip("zuko")
    generator = torch.Generator().manual_seed(seed)
    widths, heights = (torch.randn(n, BINS, generator=generator, dtype=torch.float64)
                       for _ in range(2))
    slopes = 2 * torch.randn(n, BINS - 1, generator=generator, dtype=torch.float64)
    theirs = zuko.transforms.MonotonicRQSTransform(widths, heights, slopes, bound=SPLINE_BOUND)
    # zuko's knots run from -B to B; its end slopes are 1 as ours are.
    x_sizes = torch.diff(theirs.horizontal, dim=-1) / (2 * SPLINE_BOUND)
    y_sizes = torch.diff(theirs.vertical, dim=-1) / (2 * SPLINE_BOUND)
    inner = theirs.derivatives[..., 1:-1]
    assert torch.allclose(theirs.derivatives[..., [0, -1]], torch.ones(n, 2, dtype=torch.float64))
    raw_slopes = _unclamped(torch.log(inner), LIMIT)
    ours = torch.cat([_raw_sizes(x_sizes), _raw_sizes(y_sizes), raw_slopes], dim=-1)
    return theirs, ours


def test_the_spline_and_its_log_slope_match_zukos_on_the_same_knots():
    theirs, params = _zuko_and_ours(n=6, seed=0)
    x = torch.linspace(-6.0, 6.0, 301, dtype=torch.float64).unsqueeze(1).expand(301, 6)
    y, log_slope = rational_quadratic(x, params.expand(301, 6, -1))
    expected_y, expected_log = theirs.call_and_ladj(x)
    assert torch.allclose(y, expected_y, atol=1e-9)
    assert torch.allclose(log_slope, expected_log, atol=1e-8)
    back, inverse_log = rational_quadratic(y, params.expand(301, 6, -1), inverse=True)
    assert torch.allclose(back, theirs.inv(expected_y), atol=1e-9)
    assert torch.allclose(back, x, atol=1e-9) and torch.allclose(inverse_log, -log_slope,
                                                                 atol=1e-8)


def test_zero_knots_are_the_identity_and_the_tails_are_the_identity_always():
    x = torch.tensor([[-7.0, -5.0, -4.99, -1.0, 0.0, 0.3, 4.99, 5.0, 12.0]])
    y, log_slope = rational_quadratic(x, torch.zeros(1, 9, 3 * BINS - 1))
    assert torch.allclose(y, x, atol=1e-5) and log_slope.abs().max() < 1e-5
    one_spline = 3 * torch.randn(1, 1, 3 * BINS - 1, generator=torch.Generator().manual_seed(2))
    y, log_slope = rational_quadratic(x, one_spline.expand(1, 9, -1))
    assert torch.all(torch.diff(y) > 0)  # one spline: monotone across the bound
    params = 3 * torch.randn(1, 9, 3 * BINS - 1, generator=torch.Generator().manual_seed(2))
    y, log_slope = rational_quadratic(x, params)
    outside = x.abs() >= SPLINE_BOUND
    assert torch.equal(y[outside], x[outside]) and torch.all(log_slope[outside] == 0)
    assert torch.all(y[~outside].abs() < SPLINE_BOUND)  # the bound maps onto itself


def test_gradients_are_finite_for_values_outside_the_bound_and_at_the_knots():
    params = torch.randn(4, 3, 3 * BINS - 1, requires_grad=True)
    x = torch.tensor([[-1e4, -5.0, 0.0], [5.0, 1e4, 4.9999], [-4.9999, 2.0, -2.0],
                      [0.0, 0.0, 0.0]], requires_grad=True)
    for inverse in (False, True):
        y, log_slope = rational_quadratic(x, params, inverse=inverse)
        grads = torch.autograd.grad((y.sum() + log_slope.sum()), (x, params))
        assert all(bool(g.isfinite().all()) for g in grads)


def test_extreme_knots_stay_monotone_and_invertible():
    params = torch.cat([torch.full((2, 4, BINS), 30.0).tril(), torch.full((2, 4, BINS), -30.0),
                        torch.full((2, 4, BINS - 1), 20.0)], dim=-1)
    x = torch.linspace(-4.9, 4.9, 8).repeat(2, 1)[:, :4]
    y, log_slope = rational_quadratic(x, params)
    back, _ = rational_quadratic(y, params, inverse=True)
    assert bool(log_slope.isfinite().all()) and torch.allclose(back, x, atol=1e-3)


def test_a_coupling_flow_bends_half_the_entries_per_block_and_is_a_function_of_its_seed():
    flow = SplineINN(dim=5, condition_dim=0, blocks=3, width=8, seed=4)
    for coupling in flow.couplings:
        assert sorted(torch.cat([coupling.kept, coupling.bent]).tolist()) == list(range(5))
        assert len(coupling.bent) == 3
    again = SplineINN(dim=5, condition_dim=0, blocks=3, width=8, seed=4)
    other = SplineINN(dim=5, condition_dim=0, blocks=3, width=8, seed=5)
    state, same = flow.state_dict(), again.state_dict()
    assert all(torch.equal(state[k], same[k]) for k in state)
    assert any(not torch.equal(state[k], other.state_dict()[k]) for k in state)
