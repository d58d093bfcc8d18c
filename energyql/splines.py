"""Rational-quadratic spline couplings (neural spline flows, Durkan et al. 2019).

A flat flow of ``blocks`` couplings. Each block splits the entries in two halves (a random split
per block, drawn from the config's seed), and bends every entry of the second half by a
monotone rational-quadratic spline on ``[-SPLINE_BOUND, SPLINE_BOUND]`` whose knots a
two-layer network reads from the first half and the context; each entry of the first half
gets a spline of its own, set by the context alone. Outside the bound a spline is the
identity, where N(0, 1) puts 6e-7 of its mass.

Written here rather than taken from zuko's NSF (which energyql used first, on 2026-12-07)
because of what a training step asks of a flow: zuko computes a coupling as a two-pass masked
autoregressive transform, so its inverse runs every block's network three times and writes
knots for every entry; one coupling here runs its network once per direction and writes
knots only for the half it bends, and returns the log-determinant with the value in both
directions (docs/benchmarks.md has the timings). The tests check the spline against zuko's
as an independent implementation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from energyql.manifest import SPLINE_BINS

#: The splines' half-width: each bends [-SPLINE_BOUND, SPLINE_BOUND] and is the identity outside.
SPLINE_BOUND = 5.0
# Bounds that keep every spline tame, so that it stays strictly monotone, its inverse well
# conditioned in float32, and no training step can make it arbitrarily steep: each bin is at
# least MIN_BIN of the range, and the unconstrained numbers are softly clamped (u / (1 + |u| /
# c)) so that two bins' sizes differ by at most a factor 1 / MIN_SLOPE and every knot's slope
# lies in [MIN_SLOPE, 1 / MIN_SLOPE], as zuko's NSF bounds them.
MIN_BIN = 1e-3
MIN_SLOPE = 1e-3
_LOG_SLOPE_LIMIT = -math.log(MIN_SLOPE)


def rational_quadratic(x: torch.Tensor, params: torch.Tensor, *, inverse: bool = False,
                       bound: float = SPLINE_BOUND) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a monotone rational-quadratic spline entrywise; return ``(y, log|dy/dx|)``.

    Arguments:
        x: values ``(..., n)``.
        params: unconstrained knots ``(..., n, 3K - 1)``: ``K`` bin widths, ``K`` bin heights
            (logits of their shares of the range) and the ``K - 1`` inner knots' log-slopes;
            the end slopes are 1, so the spline meets the identity outside
            ``[-bound, bound]`` smoothly.
        inverse: apply the inverse spline instead (its log-determinant is the negative of the
            forward one at the returned point).

    Zero ``params`` give the identity. Each number is softly clamped, ``u / (1 + |u| / c)``,
    with ``c`` half the log-slope bound for the bins' logits and the bound itself for the
    log-slopes.
    """
    bins = (params.shape[-1] + 1) // 3
    inverse_limits = params.new_full((3 * bins - 1,), 1 / _LOG_SLOPE_LIMIT)
    inverse_limits[:2 * bins] = 2 / _LOG_SLOPE_LIMIT
    squashed = params / (1 + params.abs() * inverse_limits)
    # Bin sizes and knot positions of both axes at once: (..., n, 2, K) and (..., n, 2, K + 1).
    shares = torch.softmax(squashed[..., :2 * bins].unflatten(-1, (2, bins)), dim=-1)
    sizes = MIN_BIN + (1 - MIN_BIN * bins) * shares
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0)) * (2 * bound) - bound
    slopes = F.pad(torch.exp(squashed[..., 2 * bins:]), (1, 1), value=1.0)
    inside = (x > -bound) & (x < bound)
    # The bin holding each value (0..K-1); values outside are put in an end bin, then discarded.
    inner_edges = knots[..., 1 if inverse else 0, 1:-1].contiguous()
    k = torch.searchsorted(inner_edges, x.unsqueeze(-1).contiguous()).clamp(0, bins - 1)
    ends = torch.cat([k, k + 1], dim=-1)  # (..., n, 2): the bin's two knots
    corners = knots.gather(-1, ends.unsqueeze(-2).expand(*ends.shape[:-1], 2, 2))
    (x0, y0), (x1, y1) = corners[..., 0].unbind(-1), corners[..., 1].unbind(-1)
    d0, d1 = slopes.gather(-1, ends).unbind(-1)
    w, h = x1 - x0, y1 - y0
    s = h / w
    curve = d0 + d1 - 2 * s
    if inverse:
        dy = (x - y0).clamp(min=0) * inside
        a = h * (s - d0) + dy * curve
        b = h * d0 - dy * curve
        c = -s * dy
        xi = (2 * c / (-b - torch.sqrt((b * b - 4 * a * c).clamp(min=0)))).clamp(0, 1)
    else:
        xi = ((x - x0) / w).clamp(0, 1)
    one_minus = 1 - xi
    between = xi * one_minus
    denominator = s + curve * between
    log_slope = (2 * torch.log(s) + torch.log(d1 * xi * xi + 2 * s * between
                                              + d0 * one_minus * one_minus)
                 - 2 * torch.log(denominator))
    if inverse:
        out = x0 + xi * w
        log_slope = -log_slope
    else:
        out = y0 + h * (s * xi * xi + d0 * between) / denominator
    return torch.where(inside, out, x), torch.where(inside, log_slope, torch.zeros_like(x))


class SplineCoupling(nn.Module):
    """One coupling: the entries ``bent`` are bent by splines whose knots a network reads from
    the entries ``kept`` and the context; the entries ``kept`` are bent too, each by a spline
    of its own that only the context sets (learned knots; zuko's NSF has these as well, and
    its flows were the first ones measured on the worlds).

    Arguments:
        kept, bent: index tensors that partition ``range(dim)``.
        condition_dim: the context's size (0: none).
        width: the network's hidden width.
        bins: bins per spline.
    """

    kept: torch.Tensor
    bent: torch.Tensor
    order: torch.Tensor  # puts the concatenated halves back in the entries' order

    def __init__(self, kept: torch.Tensor, bent: torch.Tensor, condition_dim: int, width: int,
                 bins: int = SPLINE_BINS):
        super().__init__()
        self.register_buffer("kept", kept)
        self.register_buffer("bent", bent)
        self.register_buffer("order", torch.argsort(torch.cat([kept, bent])))
        self.per_entry = 3 * bins - 1
        # Every spline starts as the identity: zero knots, zero last layers.
        self.marginal = nn.Parameter(torch.zeros(len(kept) * self.per_entry)) \
            if len(kept) else None
        self.marginal_context = _zero_linear(condition_dim, len(kept) * self.per_entry) \
            if condition_dim and len(kept) else None
        inputs, outputs = len(kept) + condition_dim, len(bent) * self.per_entry
        # With nothing to read (a one-entry latent and no context) the knots are parameters.
        self.knots = nn.Parameter(torch.zeros(outputs)) if inputs == 0 else None
        self.net = nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, width),
                                 nn.ReLU(), _zero_linear(width, outputs)) if inputs else None

    def _marginal_knots(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        rows = x.shape[0]
        if self.marginal is None:  # a one-entry latent keeps nothing
            return x.new_zeros(rows, 0, self.per_entry)
        knots = self.marginal.expand(rows, -1)
        if self.marginal_context is not None and context is not None:
            knots = knots + self.marginal_context(context)
        return knots.reshape(rows, self.kept.shape[0], self.per_entry)

    def _bent_knots(self, kept: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if self.net is None:
            assert self.knots is not None
            raw = self.knots.expand(kept.shape[0], -1)
        else:
            raw = self.net(kept if context is None else torch.cat([kept, context], dim=1))
        return raw.reshape(kept.shape[0], self.bent.shape[0], self.per_entry)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *,
                inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the coupled values and ``log|det|`` per row. The network reads the kept
        entries on the noise side, so that each direction runs it once."""
        kept, bent = x[:, self.kept], x[:, self.bent]
        marginal = self._marginal_knots(x, context)
        if inverse:  # recover the kept entries first: the network reads them
            kept, log_kept = rational_quadratic(kept, marginal, inverse=True)
            bent, log_bent = rational_quadratic(bent, self._bent_knots(kept, context),
                                                inverse=True)
            moved, log_slope = torch.cat([kept, bent], 1), torch.cat([log_kept, log_bent], 1)
        else:  # one spline call for both halves
            knots = torch.cat([marginal, self._bent_knots(kept, context)], dim=1)
            moved, log_slope = rational_quadratic(torch.cat([kept, bent], 1), knots)
        return moved[:, self.order], log_slope.sum(dim=1)


def _zero_linear(inputs: int, outputs: int) -> nn.Linear:
    layer = nn.Linear(inputs, outputs)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class SplineINN(nn.Module):
    """Creates a flat flow of spline couplings; called like FrEIA's ``SequenceINN``
    (``rev=False``: eps -> z, with ``log|det dz/deps|``; ``rev=True``: the inverse).

    Arguments:
        dim: the latent size.
        condition_dim: the context's size as the networks see it (0: unconditional).
        blocks: couplings.
        width: the networks' hidden width.
        seed: draws the halves and the initial weights.
    """

    def __init__(self, dim: int, condition_dim: int, blocks: int, width: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        fork = torch.random.fork_rng(devices=[])
        with fork:
            torch.manual_seed(seed)  # the networks' initial weights
            couplings = []
            for _ in range(blocks):
                order = torch.randperm(dim, generator=generator)
                half = dim // 2
                couplings.append(SplineCoupling(order[:half].sort().values,
                                                order[half:].sort().values,
                                                condition_dim, width))
        self.couplings = nn.ModuleList(couplings)

    def forward(self, x: torch.Tensor, c: list[torch.Tensor] | None = None, rev: bool = False):
        context = c[0] if c else None
        total = x.new_zeros(x.shape[0])
        for coupling in reversed(self.couplings) if rev else self.couplings:
            x, log_det = coupling(x, context, inverse=rev)
            total = total + log_det
        return x, total


__all__ = ["MIN_BIN", "MIN_SLOPE", "SPLINE_BOUND", "SplineCoupling", "SplineINN",
           "rational_quadratic"]
