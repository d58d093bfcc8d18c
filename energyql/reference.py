"""A stage's exact target estimated from samples, and a sampler's drift from it with its error.

The exact target ``p ∝ p0·exp(-E)`` of a one-stage program is estimated by self-normalised
importance weights over samples whose densities are known. Base samples alone
(``w = exp(-E)``) see a rare target through few of them: a 1 % target has an effective sample
size of about 1 % of the pool. The trained flow's own samples land on the target, so
the reference pools both and weighs each row by the density of the *mixture* they came from
(the balance heuristic of multiple importance sampling, Veach and Guibas 1995):

    w(z) = p0(z)·exp(-E(z)) / (N_b·p0(z) + N_f·q(z))

Every weight stays below ``exp(-E)/N_b`` (the base samples cover whatever the flow missed, so
the estimate stays exact where the flow is wrong), and where the flow is close to the target
its rows are worth nearly one sample each.

The drift of an attribute is the total variation between its distribution in the sampler's
rows and in the reference; its standard error comes from a seeded bootstrap that resamples
the base rows and the sampler's rows (which, in a pooled reference, move both sides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from energyql.target import effective_sample_size

#: Bootstrap replicates behind a drift's standard error (its own error is about 5 %).
BOOTSTRAP_REPLICATES = 200


def balance_log_weights(neg_energy: torch.Tensor, log_q_over_p0: torch.Tensor,
                        base_rows: int, flow_rows: int) -> torch.Tensor:
    """Return ``log p0·exp(-E) − log(N_b·p0 + N_f·q)`` of rows given ``-E`` and ``log q/p0``.

    The same formula holds for a row whichever of the two samplers drew it.
    """
    if base_rows < 1 or flow_rows < 0:
        raise ValueError(f"a reference needs base rows (got {base_rows}) and flow rows >= 0 "
                         f"(got {flow_rows})")
    ratio = log_q_over_p0.double()
    mixture = torch.logaddexp(torch.full_like(ratio, math.log(base_rows)),
                              ratio + math.log(flow_rows)) if flow_rows else \
        torch.full_like(ratio, math.log(base_rows))
    return neg_energy.double() - mixture


@dataclass(frozen=True)
class Reference:
    """Weighted rows that estimate an exact target: ``base_rows`` base samples, then (when
    ``pooled``) the sampler's own rows, in that order.

    Arguments:
        log_weights: one self-normalisable log-weight per row.
        base_rows: how many of the rows are base samples.
        pooled: whether the sampler's rows follow them (the balance heuristic's weights).
    """

    log_weights: torch.Tensor
    base_rows: int
    pooled: bool

    @classmethod
    def from_base(cls, neg_energy: torch.Tensor) -> Reference:
        """Base samples alone, weighted by ``exp(-E)``."""
        return cls(neg_energy.double(), len(neg_energy), False)

    @classmethod
    def pooled_with_flow(cls, base_neg_energy: torch.Tensor, base_log_q_over_p0: torch.Tensor,
                         flow_neg_energy: torch.Tensor,
                         flow_log_q_over_p0: torch.Tensor) -> Reference:
        """Base samples and the flow's, each weighted against the mixture that drew them."""
        n_base, n_flow = len(base_neg_energy), len(flow_neg_energy)
        if len(base_log_q_over_p0) != n_base or len(flow_log_q_over_p0) != n_flow:
            raise ValueError("every row needs its energy and its density ratio")
        weights = torch.cat([
            balance_log_weights(base_neg_energy, base_log_q_over_p0, n_base, n_flow),
            balance_log_weights(flow_neg_energy, flow_log_q_over_p0, n_base, n_flow)])
        return cls(weights, n_base, True)

    @property
    def flow_rows(self) -> int:
        return len(self.log_weights) - self.base_rows if self.pooled else 0

    @property
    def ess(self) -> float:
        """Kish's effective sample size of the rows."""
        return effective_sample_size(self.log_weights)


def distribution(values: torch.Tensor, size: int,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """The (weighted) distribution of value indices over ``size`` values (float64)."""
    weights = torch.ones(len(values), dtype=torch.float64) if weights is None else weights
    counts = torch.zeros(size, dtype=torch.float64).index_add_(0, values, weights)
    return counts / counts.sum().clamp(min=1e-300)


def _tv(ours: torch.Tensor, reference: torch.Tensor, log_weights: torch.Tensor,
        size: int) -> float:
    weights = torch.softmax(log_weights, 0)
    return 0.5 * float((distribution(ours, size) - distribution(reference, size, weights))
                       .abs().sum())


def drift(ours: torch.Tensor, reference_values: torch.Tensor, reference: Reference, size: int,
          *, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> tuple[float, float]:
    """Return the TV between an attribute's values in the sampler's rows (``ours``, value
    indices) and in the reference (``reference_values``, one per reference row), and its
    bootstrap standard error (0 with no replicates)."""
    if len(reference_values) != len(reference.log_weights):
        raise ValueError(f"{len(reference_values)} reference values for "
                         f"{len(reference.log_weights)} reference rows")
    if reference.pooled and reference.flow_rows != len(ours):
        raise ValueError("a pooled reference holds the sampler's own rows: "
                         f"{reference.flow_rows} of them, not {len(ours)}")
    tv = _tv(ours, reference_values, reference.log_weights, size)
    if replicates < 2:
        return tv, 0.0
    rng = torch.Generator().manual_seed(seed)
    n_base, n_ours = reference.base_rows, len(ours)
    values = []
    for _ in range(replicates):
        base_rows = torch.randint(n_base, (n_base,), generator=rng)
        our_rows = torch.randint(n_ours, (n_ours,), generator=rng)
        rows = torch.cat([base_rows, n_base + our_rows]) if reference.pooled else base_rows
        values.append(_tv(ours[our_rows], reference_values[rows], reference.log_weights[rows],
                          size))
    return tv, float(torch.tensor(values, dtype=torch.float64).std())


__all__ = ["BOOTSTRAP_REPLICATES", "Reference", "balance_log_weights", "distribution", "drift"]
