"""One stage's target: its base sampler, optional flow, and the energy that owns λ.

Every per-stage quantity the trainer, the samplers and evaluation need is computed here once:
proposals with their log-ratio ``log p0(u) - log q(u)`` towards the base prior, the pointwise
energy and features φ of images, λ packed over the stage's constraints, and the effective
sample size of importance weights.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

from energyql.energies.base import Features
from energyql.energies.conditional import inherited_context
from energyql.energies.constraint import ConstraintList
from energyql.energies.lower import StageEnergy
from energyql.errors import SamplerError
from energyql.flows import LatentFlow, standard_normal_log_prob
from energyql.generators.base import Generator


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """Return Kish's ESS, (Σw)² / Σw², of unnormalised log-weights."""
    w = torch.softmax(log_weights.double(), dim=0)
    return float(1.0 / (w * w).sum())


class StageTarget:
    """Creates the target ``p(u) ∝ p0(u)·exp(-E(G(u)))`` of one stage, with ``q`` its flow.

    Arguments:
        base: the stage's base sampler (the root generator or the previous stage).
        energy: the stage's energy (None for samplers that never judge images).
        flow: the stage's flow ``eps -> u`` (None: proposals come from the base prior).
        device: where noise and proposals live.
    """

    def __init__(self, base: Generator, energy: StageEnergy | None = None,
                 flow: LatentFlow | None = None, *, device: str = "cpu"):
        self.base = base
        self.energy = energy
        self.flow = flow
        self.device = device
        self.fit = True  # samplers: refit the constraints' λ on their own proposals

    @classmethod
    def of(cls, source: Any, energy: StageEnergy | None, *, device: str,
           need_flow: bool = False) -> StageTarget:
        """Return the last stage's target of an Artifact, StageSampler or plain Generator,
        moved to ``device`` in eval mode."""
        from energyql.sampler import Artifact, StageSampler

        sampler = source.sampler if isinstance(source, Artifact) else source
        flow: LatentFlow | None
        if isinstance(sampler, StageSampler):
            base, flow = sampler.base, sampler.flow
        elif isinstance(source, Generator):
            base, flow = source, None
        else:
            raise SamplerError(f"expected a Generator, StageSampler or Artifact, "
                               f"got {type(source).__name__}",
                               hint="load an artifact with energyql.load, or a generator with "
                                    "energyql.generators.load")
        if need_flow and flow is None:
            raise SamplerError("this sampler needs a trained flow: pass an Artifact "
                               "(energyql.load)",
                               hint="train one with `energyql run EXPR --out DIR`, or use "
                                    "'rejection', 'importance' or 'langevin' on a generator")
        if flow is not None and flow.config.context_dim:
            raise SamplerError("conditional flows are not supported by the baseline samplers",
                               hint="sample a conditional artifact with --sampler flow")
        return cls(base.to(device).eval(), energy.to(device).eval() if energy is not None
                   else None, flow.to(device).eval() if flow is not None else None,
                   device=device)

    @property
    def dim(self) -> int:
        return self.base.latent_dim

    # --- proposals ---------------------------------------------------------------------------

    def noise(self, m: int, rng: torch.Generator, rows: slice | None = None) -> torch.Tensor:
        """Return ``m`` standard normal rows (only ``rows`` of them: a rank's shard)."""
        eps = torch.randn(m, self.dim, generator=rng)
        return (eps if rows is None else eps[rows]).to(self.device)

    def push(self, eps: torch.Tensor, context: torch.Tensor | None = None, *,
             use_flow: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``u`` for noise ``eps`` and ``log p0(u) - log q(u)`` (0 without the flow)."""
        if not use_flow or self.flow is None:
            return eps, torch.zeros(len(eps), device=eps.device)
        u, logdet = self.flow(eps, context)
        # log q(u) = log N(eps) - logdet
        return u, self.base.log_prior(u) - standard_normal_log_prob(eps) + logdet

    def propose(self, m: int, rng: torch.Generator, use_flow: bool = True,
                rows: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``m`` proposals ``u`` (``rows`` of them) and ``log p0(u) - log q(u)``."""
        return self.push(self.noise(m, rng, rows), use_flow=use_flow)

    def decode(self, u: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return the base's images of latents ``u``; ``context`` (the stage's values,
        physical units) sets the sliders of a base that is an earlier slider stage."""
        params = self.energy.context if self.energy is not None else []
        return self.base.decode(u, inherited_context(self.base, params, context))

    @property
    def conditional_base(self) -> bool:
        """Whether the base moves with the stage's context (it is an earlier slider stage)."""
        return bool(getattr(self.base, "context_params", ()))

    # --- judging -----------------------------------------------------------------------------

    def _energy(self) -> StageEnergy:
        if self.energy is None:
            raise SamplerError("this target has no energy to judge images with",
                               hint="pass energy=stage_energy(program, source)")
        return self.energy

    def measure(self, images: torch.Tensor,
                rng: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the pointwise energy and φ (None without constraints) of images."""
        energy = self._energy()
        features = Features(images, energy.attribute_model, rng)
        pointwise = energy.pointwise_energy(features)
        phi = energy.phi(features) if energy.has_constraints else None
        return pointwise, phi

    def total(self, pointwise: torch.Tensor, phi: torch.Tensor | None) -> torch.Tensor:
        """Return the stage's energy from its pointwise part and φ, with the current λ."""
        return pointwise if phi is None else pointwise - phi @ self.lam().to(phi.device)

    def energy_of(self, u: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        """Return E(G(u)) with the current λ (differentiable in ``u``)."""
        return self.total(*self.measure(self.decode(u), rng))

    # --- λ, packed over the stage's constraints (owned by its ConstraintList) ----------------

    def constraints(self) -> ConstraintList:
        """Return the stage's constraint terms, in order (the order λ is packed in)."""
        return self._energy().constraints

    def lam(self) -> torch.Tensor:
        """Return every constraint's λ as trained, concatenated (CPU)."""
        return self.constraints().packed("lam")

    def moments_target(self) -> torch.Tensor:
        """Return every constraint's target moments, concatenated (CPU)."""
        return self.constraints().packed("target")

    # --- how close the flow is to this target ------------------------------------------------

    def log_weights(self, n: int, rng: torch.Generator, *, batch: int = 256,
                    exact: bool = True, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``log p̃(u) - log q(u)`` of ``n`` flow proposals (CPU, float64).

        ``p̃ = p0·exp(-E)`` with the exact λ (``exact``) or λ as trained; the flow must exist.
        ``context``: a slider stage's setting ``(P,)`` (physical units); its λ comes from the
        stage's λ grid, which is the exact fit.
        """
        if self.flow is None:
            raise SamplerError("closeness to the target needs the stage's flow",
                               hint="pass an Artifact trained with `energyql run`")
        if context is not None:
            return self._log_weights_at(n, rng, batch, context)
        constraints = self.constraints() if self._energy().has_constraints else None
        lam = (constraints.exact() if exact else constraints.packed("lam")) \
            if constraints is not None else None
        out = []
        with torch.no_grad():
            for start in range(0, n, batch):
                u, log_ratio = self.propose(min(batch, n - start), rng)
                pointwise, phi = self.measure(self.decode(u), rng)
                energy = pointwise if phi is None or lam is None \
                    else pointwise - phi @ lam.to(phi.device)
                out.append((log_ratio - energy).double().cpu())
        return torch.cat(out)


    def _log_weights_at(self, n: int, rng: torch.Generator, batch: int,
                        context: torch.Tensor) -> torch.Tensor:
        from energyql.energies.conditional import normalize_context

        energy = self._energy()
        grid = getattr(energy, "lambda_grid", None)
        out = []
        with torch.no_grad(), _exact_grid(grid):
            for start in range(0, n, batch):
                m = min(batch, n - start)
                rows = context.to(self.device, torch.float32).expand(m, -1)
                eps = self.noise(m, rng)
                u, log_ratio = self.push(eps, normalize_context(energy.context, rows))
                total, _ = energy.total_and_parts(energy.features(
                    self.decode(u, rows), rng, context=rows))
                out.append((log_ratio - total).double().cpu())
        return torch.cat(out)


@contextlib.contextmanager
def _exact_grid(grid: Any) -> Iterator[None]:
    """A slider stage's λ grid without its training offset, for the duration."""
    if grid is None:
        yield
        return
    before, grid.exact = grid.exact, True
    try:
        yield
    finally:
        grid.exact = before


def closeness(log_weights: torch.Tensor) -> dict[str, float]:
    """Return how close a flow is to its target from exact log-weights on its own samples.

    ``ess_fraction`` is Kish's ESS over N; ``kl`` is ``log mean w - mean log w``, an estimate
    of KL(q ‖ p) that is 0 exactly when the flow is the target (and a lower bound to it, since
    the normaliser is itself estimated from the same samples).
    """
    log_w = log_weights.double()
    n = len(log_w)
    log_mean_w = float(torch.logsumexp(log_w, 0)) - math.log(n)
    return {"ess_fraction": round(effective_sample_size(log_w) / n, 4),
            "kl": round(log_mean_w - float(log_w.mean()), 4), "samples": n}


__all__ = ["StageTarget", "closeness", "effective_sample_size"]
