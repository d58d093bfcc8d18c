"""Fitting λ for distributional constraints by moment matching.

Given samples with features φ_i (rows of ``phi``) and log-weights ``a_i`` under which they
represent the stage's distribution *without* the constraint, find λ such that the tilted
weights ``w_i ∝ exp(a_i + λ·φ_i)`` give ``Σ w_i φ_i = target``. This is the dual of a
maximum-entropy problem: minimise the convex function

    f(λ) = logsumexp(a + Φλ) − λ·target + (ρ/2)|λ|²

whose gradient is (tilted mean of φ) − target. The small ridge ρ keeps λ finite when a target
value is 0 or unreachable from the samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from energyql.target import effective_sample_size


@dataclass(frozen=True)
class MomentFit:
    """The outcome of a fit: λ, the moments it achieves, and the weights' ESS."""

    lam: torch.Tensor
    achieved: torch.Tensor
    target: torch.Tensor
    ess: float
    samples: int
    flow_moments: torch.Tensor | None = None  # unweighted mean of φ over a flow's samples

    @property
    def max_error(self) -> float:
        return float((self.achieved - self.target).abs().max())

    @property
    def ess_fraction(self) -> float:
        return self.ess / max(1, self.samples)


__all__ = ["MomentFit", "effective_sample_size", "fit_lambda"]


def fit_lambda(phi: torch.Tensor, target: torch.Tensor, log_weights: torch.Tensor | None = None,
               *, ridge: float = 1e-4, iterations: int = 100, tolerance: float = 1e-6) -> MomentFit:
    """Return the λ that tilts the weighted samples onto the target moments (Newton's method).

    Arguments:
        phi: ``(N, K)`` features of N samples.
        target: ``(K,)`` wanted mean of φ.
        log_weights: ``(N,)`` log-weights of the samples before tilting (default: uniform).
    """
    phi = phi.detach().double()
    target = target.detach().double().to(phi.device)
    a = torch.zeros(phi.shape[0], dtype=torch.float64, device=phi.device) if log_weights is None \
        else log_weights.detach().double()
    k = phi.shape[1]
    lam = torch.zeros(k, dtype=torch.float64, device=phi.device)

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(a + phi @ theta, 0) - theta @ target + 0.5 * ridge * theta @ theta

    for _ in range(iterations):
        w = torch.softmax(a + phi @ lam, 0)
        mean = w @ phi
        grad = mean - target + ridge * lam
        if grad.abs().max() < tolerance:
            break
        centred = phi - mean
        eye = torch.eye(k, dtype=phi.dtype, device=phi.device)
        hessian = (centred * w[:, None]).T @ centred + (ridge + 1e-9) * eye
        step = torch.linalg.solve(hessian, grad)
        # Backtracking line search keeps Newton stable far from the optimum.
        t, f0 = 1.0, objective(lam)
        while t > 1e-6 and objective(lam - t * step) > f0 - 0.25 * t * (grad @ step):
            t *= 0.5
        lam = lam - t * step
    logits = a + phi @ lam
    achieved = torch.softmax(logits, 0) @ phi
    return MomentFit(lam.float(), achieved.float(), target.float(),
                     effective_sample_size(logits), phi.shape[0])
