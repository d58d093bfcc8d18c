"""Replay: every image a stage has judged, kept as a weighted sample of its exact target.

A decoded latent ``z`` drawn from a proposal of density ``r`` (the base for the start's pool,
the flow of the step that drew it for a step's batch) is an importance sample of the target
with weight ``w = p̃(z)/r(z)``, ``p̃ = p0·exp(-pointwise + φ·λ)``. The buffer keeps what that
weight needs (the energy's parts, not the weight, so that a λ refit moves it) and draws rows
in proportion to it: sampling importance resampling from every image judged so far, which
costs no image. Maximum likelihood on those rows is a forward-KL term whose estimate gets
*better* as training goes on, where a step's own batch (64 rows, ESS/N 0.04 on a rare
target: about three effective samples) is too noisy to move mass.

Rows drawn by different proposals are combined per *draw* (one ``add``): each draw's
unnormalised weights estimate ``n·Z`` without bias, and a draw counts by its effective size
(its weights are multiplied by its ESS/n), so that a poor proposal's few lucky rows cannot
outweigh many good draws, and a draw that found nothing of the target adds nothing.
"""

from __future__ import annotations

import math

import torch

from energyql.errors import TrainingError

#: Upper bound on the buffer's latent storage; a larger latent keeps fewer rows.
MAX_BYTES = 256 << 20


def replay_capacity(requested: int, dim: int) -> int:
    """Rows a buffer of ``dim``-entry latents keeps: ``requested``, bounded by MAX_BYTES."""
    return max(0, min(int(requested), MAX_BYTES // (4 * max(1, dim))))


class ReplayBuffer:
    """A ring buffer of judged latents and their exact weights' parts (one rank's rows).

    ``z`` (rows, dim), ``log_p0`` (the prior at ``z``), ``pointwise`` (the pointwise energy,
    as trained), ``phi`` (the constraints' features), ``log_drawn`` (the log-density ``z``
    was drawn from) and ``draw`` (which ``add`` put it there; -1: empty). ``filled`` counts
    rows written so far (the next row goes to ``filled % capacity``).
    """

    def __init__(self, capacity: int, dim: int, features: int, device: str):
        if capacity < 1:
            raise TrainingError("a replay buffer needs room for at least one row",
                                hint="raise replay_capacity")
        self.capacity = capacity
        self.z = torch.zeros(capacity, dim, device=device)
        self.log_p0 = torch.zeros(capacity, device=device)
        self.pointwise = torch.zeros(capacity, device=device)
        self.phi = torch.zeros(capacity, features, device=device)
        self.log_drawn = torch.zeros(capacity, device=device)
        self.draw = torch.full((capacity,), -1, dtype=torch.long, device=device)
        self.filled = torch.zeros(1, dtype=torch.long, device=device)
        self.draws = torch.zeros(1, dtype=torch.long, device=device)

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint carries (filled in place on restore)."""
        return {f"replay.{k}": getattr(self, k) for k in
                ("z", "log_p0", "pointwise", "phi", "log_drawn", "draw", "filled", "draws")}

    @property
    def rows(self) -> int:
        return min(int(self.filled), self.capacity)

    @torch.no_grad()
    def add(self, z: torch.Tensor, log_p0: torch.Tensor, pointwise: torch.Tensor,
            phi: torch.Tensor, log_drawn: torch.Tensor) -> None:
        """Keep one draw's rows (the oldest rows make room when the buffer is full)."""
        n = len(z)
        if n == 0:
            return
        if n > self.capacity:  # only the newest rows of an oversized draw fit
            z, log_p0, pointwise, phi, log_drawn = (
                t[-self.capacity:] for t in (z, log_p0, pointwise, phi, log_drawn))
            n = self.capacity
        slots = (int(self.filled) + torch.arange(n, device=self.z.device)) % self.capacity
        self.z[slots] = z.detach().to(self.z)
        self.log_p0[slots] = log_p0.detach().to(self.log_p0)
        self.pointwise[slots] = pointwise.detach().to(self.pointwise)
        self.phi[slots] = phi.detach().to(self.phi)
        self.log_drawn[slots] = log_drawn.detach().to(self.log_drawn)
        self.draw[slots] = int(self.draws)
        self.filled += n
        self.draws += 1

    @torch.no_grad()
    def log_weights(self, lam: torch.Tensor) -> torch.Tensor:
        """Each filled row's log-weight against the target at ``lam``, its draw counted by
        its effective size (module docstring); empty rows get ``-inf``."""
        used = self.draw >= 0
        if not int(self.draws):
            return torch.full_like(self.log_p0, float("-inf"))
        log_w = self.log_p0 - self.pointwise - self.log_drawn
        if self.phi.shape[1]:
            log_w = log_w + self.phi @ lam.to(self.phi)
        log_w = torch.where(used, log_w.double(), torch.tensor(float("-inf"), dtype=torch.double,
                                                                device=log_w.device))
        draw = self.draw.clamp(min=0)
        groups = int(self.draws)
        # Per draw: log Σw and log Σw², by a max-shift for stability.
        peak = torch.full((groups,), float("-inf"), dtype=torch.double, device=log_w.device)
        peak = peak.scatter_reduce(0, draw[used], log_w[used], "amax")
        shifted = (log_w - peak[draw]).exp().where(used, torch.zeros_like(log_w))
        total = torch.zeros(groups, dtype=torch.double, device=log_w.device) \
            .index_add_(0, draw, shifted)
        squares = torch.zeros_like(total).index_add_(0, draw, shifted * shifted)
        count = torch.zeros_like(total).index_add_(0, draw, used.double())
        # ESS/n of a draw = (Σw)² / (n·Σw²); a draw with no weight left counts for nothing.
        share = (total * total / (count.clamp(min=1) * squares.clamp(min=1e-300))) \
            .where(total > 0, torch.zeros_like(total))
        log_w = log_w + share.clamp(min=1e-300).log()[draw]
        # Truncated importance sampling (Ionides 2008): no row weighs more than sqrt(n) times
        # the mean. A flow sample from the flow's own far tail (q tiny where p̃ is not) once
        # held 45 % of a 11,000-row buffer's weight and the flow memorised it (blue
        # triangles, KL̂ 7.2); the cap's bias vanishes as the buffer grows.
        rows = float(used.sum())
        cap = torch.logsumexp(log_w, 0) - 0.5 * math.log(rows)
        return log_w.clamp(max=float(cap)).float()

    @torch.no_grad()
    def sample(self, n: int, lam: torch.Tensor, generator: torch.Generator
               ) -> tuple[torch.Tensor, float]:
        """Draw ``n`` rows in proportion to their weights; return their latents and the
        buffer's effective sample size (0 when it holds no weight)."""
        log_w = self.log_weights(lam)
        finite = torch.isfinite(log_w)
        if not bool(finite.any()):
            return self.z[:0], 0.0
        weights = torch.softmax(log_w.double(), 0)
        ess = float(1 / (weights * weights).sum())
        rows = torch.multinomial(weights.cpu(), n, replacement=True, generator=generator)
        return self.z[rows.to(self.z.device)], ess
