"""The per-step loss of a stage: an estimator whose fixed point is the stage's exact target.

For a stage with base prior ``p0``, energy ``E`` (pointwise terms plus ``-λ·φ``) and flow
``q = T#N(0, I)``, the target is ``p(z) ∝ p0(z)·exp(-E(G(z)))``. Every part of the loss below
has ``q = p`` as its fixed point, so nothing here moves the target (``temper`` does, and only
when asked for):

- **reverse KL, pathwise**: ``mean(-log p0(z) + E_smooth + (1 - c)·E_flat - logdet)`` through
  ``z = T(eps)``. Smooth terms (CLIP, pose, identity) keep their slope.
- **reverse KL, score function** for flat terms (classifier judgements: predicates and
  constraints, whose gradient through the generator vanishes inside a class): ``c`` times
  ``mean((E_flat - baseline)·log q(z))`` with ``z`` held fixed and a leave-one-out baseline.
  Its gradient is the same ``∇E_q[E_flat]`` estimated from energy *values*, so mass leaves a
  wrong mode where the slope is zero. ``c`` *replaces* part of the pathwise gradient instead of
  adding to it, so the flat terms keep weight 1.
- **forward KL, self-normalised** (the distributional policy gradient of GDC, Khalifa et al.
  2021): ``-α·Σ w̄_i log q(z_i)`` over the flow's samples and a defensive share ``ε`` of
  samples from the base prior, ``w̄ = softmax(log p̃ - log m)`` with ``m = (1 - ε)·q + ε·p0``
  the mixture they were drawn from. It is mass-covering: base samples that land on parts of
  the target the flow has not found pull it there, and the defensive share bounds every
  weight by ``1/ε``.
- **Markovian score climbing** (Naesseth, Lindsten and Blei, NeurIPS 2020): ``-γ·mean
  log q(c_j)`` over persistent chains ``c_j``, each moved once per step by an independent
  Metropolis–Hastings step that proposes the step's own flow sample ``z_j`` (accepted with
  probability ``min(1, w(z_j)/w(c_j))``, ``w = p̃/q``: exact, since both densities are known).
  The kernel leaves ``p`` invariant, so the chains' states tend to exact target samples and
  the term's fixed point is the forward-KL optimum, ``q = p``. A chain that found a rare part
  of the target keeps it until something as good comes along: the flow is pulled towards every
  part its own samples have ever found, not only those in this step's batch. It decodes no
  image of its own (the proposals are the step's batch).
- **replay** (``replay_weight`` ρ): ``-ρ·mean log q(r_j)`` over rows ``r_j`` resampled from
  every image the stage has judged (the start's pool and every step's batch) by their exact
  importance weights (:mod:`energyql.training.replay`). Its fixed point is ``q = p`` as the
  buffer grows; it decodes no image of its own.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from energyql.distributed import Group
from energyql.energies import StageEnergy
from energyql.energies.base import Features
from energyql.energies.conditional import normalize_context, sample_context
from energyql.energies.sliders import SLIDER, SliderScaledEnergy
from energyql.errors import TrainingError
from energyql.flows import standard_normal_log_prob
from energyql.target import StageTarget
from energyql.training.config import TrainConfig, step_generator
from energyql.training.replay import ReplayBuffer, replay_capacity


@dataclass
class Chains:
    """Persistent chain states of the score-climbing term (this rank's rows).

    ``log_target`` is recomputed from its parts every step, so that a λ refit moves it:
    ``log p0 - pointwise + φ·λ``. ``ready`` is 0 until the first batch seeds the chains.
    In a slider stage every chain keeps one setting ``c`` for ``CHAIN_SETTING_STEPS`` steps
    (its rows are drawn at it), so that each chain is a Markov chain of one target; then the
    settings are drawn afresh and the chains restart from the flow's samples at them.
    ``pointwise`` is the fixed part of the energy and ``scaled[:, k]`` the slider-weighted
    terms unweighted, so the energy at ``c`` is ``pointwise + Σ_k w_k·c_k·scaled[:, k]`` and
    λ is λ(c).
    """

    z: torch.Tensor
    log_p0: torch.Tensor
    pointwise: torch.Tensor
    phi: torch.Tensor
    ready: torch.Tensor
    scaled: torch.Tensor

    @classmethod
    def empty(cls, rows: int, dim: int, features: int, device: str,
              scaled: int = 0) -> Chains:
        zeros = torch.zeros(rows, device=device)
        return cls(torch.zeros(rows, dim, device=device), zeros, zeros.clone(),
                   torch.zeros(rows, features, device=device), torch.zeros(1, device=device),
                   torch.zeros(rows, scaled, device=device))

    def state(self) -> dict[str, torch.Tensor]:
        return {f"chains.{k}": getattr(self, k) for k in ("z", "log_p0", "pointwise", "phi",
                                                          "ready", "scaled")}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for key, value in self.state().items():
            value.copy_(tensors[key])


@dataclass
class StepParts:
    """What one step of a stage's objective computed, besides the loss."""

    energies: dict[str, torch.Tensor]  # each term's per-sample energy, keyed by its text
    features: Features
    z: torch.Tensor
    logdet: torch.Tensor
    losses: dict[str, float]           # the loss's parts (reverse, score, forward)
    defensive_images: int = 0          # base images decoded for the forward term


def split_flat(parts: dict[str, torch.Tensor], energy: StageEnergy,
               temper: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the per-sample (smooth, flat) sums of a stage's parts.

    ``parts`` lists the pointwise terms first, then the constraints (the order of
    :meth:`StageEnergy.parts`). Pointwise terms are multiplied by ``temper`` (1: the exact
    target); constraints keep weight 1, since λ is fitted for the target as trained.
    """
    terms = [*energy.pointwise, *energy.constraints]
    pointwise = len(energy.pointwise)
    values = list(parts.values())
    zero = torch.zeros_like(values[0]) if values else torch.zeros(0)
    smooth, flat = zero, zero
    for i, (term, value) in enumerate(zip(terms, values)):
        weighted = value * temper if i < pointwise else value
        if term.flat:
            flat = flat + weighted
        else:
            smooth = smooth + weighted
    return smooth, flat


def leave_one_out(values: torch.Tensor, group: Group) -> torch.Tensor:
    """Return ``values`` minus, for each, the mean of the rest of the (global) batch."""
    everything = group.gather(values)
    n = len(everything)
    if n < 2:
        return torch.zeros_like(values)
    return (values - everything.mean()) * n / (n - 1)


#: Rows per slider setting in a step: the score function's baseline is the mean of the other
#: rows at the same setting, since the energy's scale moves with the setting (λ(c), w·c).
ROWS_PER_SETTING = 8
#: Steps a slider stage keeps its rows' settings while it climbs. A chain retargeted to a new
#: setting every step carries states of the settings it came from: a weight slider's chains,
#: mostly at strong weights, then held w = 0 at 0.71 glasses against the exact target's 0.27
#: (0.43 without chains, 0.37 with held settings; docs/sliders.md). Held for a few steps,
#: each chain runs towards one target, and a restart from the flow's own samples keeps the
#: target as the fixed point.
CHAIN_SETTING_STEPS = 10


def setting_rows(config: TrainConfig, group: Group) -> int:
    """Rows that share one slider setting in a step (1 when the batch does not split so)."""
    local = config.batch // max(group.world, 1)
    return ROWS_PER_SETTING if config.batch % group.world == 0 and \
        local % ROWS_PER_SETTING == 0 else 1


def sample_settings(params: list, n: int, generator: torch.Generator) -> torch.Tensor:
    """Draw ``n`` slider settings, denser towards the ends of each range (the arcsine law:
    ``low + (high - low)·(1 - cos πu)/2``). Any density that covers the ranges keeps each
    setting's exact target as the fixed point; the ends, which have neighbours on one side
    only, get more of the training."""
    u = torch.rand(n, len(params), generator=generator)
    low = torch.tensor([p.low for p in params])
    high = torch.tensor([p.high for p in params])
    return low + (high - low) * (1 - torch.cos(math.pi * u)) / 2


def grouped_leave_one_out(values: torch.Tensor, size: int) -> torch.Tensor:
    """Return ``values`` minus, for each, the mean of the other rows of its group of ``size``
    consecutive rows."""
    rows = values.reshape(-1, size)
    return ((rows - rows.mean(1, keepdim=True)) * size / (size - 1)).reshape(values.shape)


def snis_weights(log_w: torch.Tensor, group: Group) -> torch.Tensor:
    """Self-normalised importance weights of the local rows, normalised over the global batch."""
    return (log_w - torch.logsumexp(group.gather(log_w), 0)).exp()


class StageObjective(nn.Module):
    """Creates the per-step loss of one stage (what DistributedDataParallel wraps).

    ``forward(step)`` draws the step's noise (and context) from the (seed, stage, step)
    stream, pushes it through the flow (both contexts in one pass for paired energies), judges
    the images, and returns ``(loss, parts)``: the estimator of the module docstring. Only the
    flow is a registered submodule: it is all DDP syncs.

    Arguments:
        target: the stage's base, flow and energy.
        config: the run's settings (``score_share``, ``forward_weight``, ``defensive``,
            ``temper``).
        index: the stage's number (seeds its random streams).
        group: the torchrun process group (a single process by default).
    """

    def __init__(self, target: StageTarget, config: TrainConfig, index: int,
                 group: Group | None = None):
        super().__init__()
        if target.flow is None or target.energy is None:
            raise TrainingError("a stage objective needs the stage's flow and energy",
                                hint="build the StageTarget with both")
        self.flow = target.flow
        self.target = target
        self.config = config
        self.index = index
        self.group = group or Group()
        self.shard = self.group.shard(config.batch)
        self.has_flat = any(t.flat for t in [*target.energy.pointwise,
                                              *target.energy.constraints])
        self.defensive = defensive_count(config)
        self.defensive_shard = self.group.shard(self.defensive)
        energy = target.energy
        sliders_only = bool(energy.sliders) and len(energy.sliders) == len(energy.context)
        # A chain state's energy at another setting is a sum of cached columns, unless the
        # base itself moves with the setting (a stage after a slider stage): no chains there.
        self.climbing = bool(config.chain_weight) and not target.conditional_base and \
            (not energy.is_conditional or sliders_only)
        self.rows_per_setting = setting_rows(config, self.group) if sliders_only else 1
        self.scaled_terms = energy.weight_slider_terms
        rows = len(range(config.batch)[self.shard])
        features = sum(c.target.numel() for c in energy.constraints)
        self.chains = Chains.empty(rows if self.climbing else 0, target.dim, features,
                                   target.device, len(self.scaled_terms))
        # Replay weights need a target that one pool serves: not a conditional stage (its
        # target moves with the context; paired energies are conditional too).
        capacity = replay_capacity(config.replay_capacity, target.dim)
        replaying = bool(config.replay_weight) and not energy.is_conditional \
            and not target.conditional_base
        if replaying and capacity < config.batch:
            warnings.warn(f"replay is off for stage {index}: its buffer holds {capacity} rows of "
                          f"{target.dim}-entry latents (replay_capacity, at most 256 MB), "
                          f"fewer than a batch ({config.batch})", stacklevel=2)
            replaying = False
        self.replay = ReplayBuffer(capacity, target.dim, features, target.device) \
            if replaying else None

    def state(self) -> dict[str, torch.Tensor]:
        """The objective's own tensors a checkpoint carries (chains, replay buffer)."""
        state = self.chains.state() if self.climbing else {}
        if self.replay is not None:
            state.update(self.replay.state())
        return state

    @property
    def energy(self) -> StageEnergy:
        return cast(StageEnergy, self.target.energy)  # checked in __init__

    def forward(self, step: int) -> tuple[torch.Tensor, StepParts]:
        config, group, energy = self.config, self.group, self.energy
        generator = step_generator(config.seed, self.index, step)
        eps = self.target.noise(config.batch, generator, self.shard)
        z, logdet, flow_context, features = self._judged_flow_samples(eps, generator, step)
        parts = energy.parts(features)
        smooth, flat = split_flat(parts, energy, config.temper)
        share = config.score_share if self.has_flat else 0.0
        # Smooth terms too where the generator flattens them (paired energies compare two
        # samples of one noise: their value is no function of one sample, so never).
        smooth_share = 0.0 if energy.paired else config.smooth_score_share
        log_p0 = self.target.base.log_prior(z)
        per_sample = -log_p0 + (1 - smooth_share) * smooth + (1 - share) * flat - logdet
        loss = per_sample.mean()
        losses = {"reverse": float(loss.detach())}
        need_log_q = bool(share or smooth_share or config.forward_weight) or self.climbing
        log_q = self.flow.log_prob(z.detach(), flow_context) if need_log_q else None
        with torch.no_grad():  # the density each flow row was drawn from, by the forward pass
            log_q_own = (standard_normal_log_prob(eps) - logdet).detach()
        if (share or smooth_share) and log_q is not None:
            with torch.no_grad():
                valued = share * flat.detach().float() + smooth_share * smooth.detach().float()
                advantage = grouped_leave_one_out(valued, self.rows_per_setting) \
                    if self.rows_per_setting > 1 else leave_one_out(valued, group)
            score = (advantage * log_q).mean()
            loss = loss + score
            losses["score"] = float(score.detach())
        defensive_images = 0
        if config.forward_weight and log_q is not None and not energy.is_conditional:
            with torch.no_grad():
                log_target = (log_p0 - smooth - flat).detach()
            forward, defensive_images = self._forward_kl(log_q, log_q_own, log_p0.detach(),
                                                         log_target, generator)
            loss = loss + config.forward_weight * forward
            losses["forward"] = float(forward.detach())
        if self.climbing and log_q is not None:
            climb = self._climb(z.detach(), log_p0.detach(), log_q, log_q_own, parts,
                                features, generator, flow_context,
                                restart=self._holds_settings and step > 0
                                and step % CHAIN_SETTING_STEPS == 0)
            loss = loss + config.chain_weight * climb
            losses["chains"] = float(climb.detach())
        if self.replay is not None:
            replayed = self._replay(z, log_p0, log_q_own, parts, features, generator)
            if replayed is not None:
                loss = loss + config.replay_weight * replayed
                losses["replay"] = float(replayed.detach())
        return loss, StepParts(parts, features, z, logdet, losses, defensive_images)

    def seed_chains(self, z: torch.Tensor, pointwise: torch.Tensor, phi: torch.Tensor,
                    log_w: torch.Tensor, generator: torch.Generator,
                    scaled: torch.Tensor | None = None) -> bool:
        """Start the chains from a judged base pool, resampled by its target weights
        (sampling importance resampling: both modes of a rare target, in their exact
        proportion, from the first step on). ``log_w`` is ``(N,)``, or ``(rows, N)`` with
        one row of weights per chain of this rank (a slider stage: each at its setting).
        Return False (chains unchanged) when the pool says nothing: fewer than two effective
        samples (at any setting)."""
        weights = torch.softmax(log_w.double(), -1)
        if not self.climbing or float((1 / (weights * weights).sum(-1)).min()) < 2:
            return False
        if weights.dim() == 2:
            rows = torch.multinomial(weights, 1, generator=generator)[:, 0]
        else:
            rows = torch.multinomial(weights, self.config.batch, replacement=True,
                                     generator=generator)[self.shard]
        chains, device = self.chains, self.target.device
        chains.z.copy_(z[rows].to(device))
        chains.log_p0.copy_(self.target.base.log_prior(chains.z))
        chains.pointwise.copy_(pointwise[rows].to(device))
        chains.phi.copy_(phi[rows].to(device))
        if scaled is not None:
            chains.scaled.copy_(scaled[rows].to(device))
        chains.ready.fill_(1)
        return True

    def take_pool(self, z: torch.Tensor, pointwise: torch.Tensor, phi: torch.Tensor,
                  log_w: torch.Tensor, generator: torch.Generator) -> None:
        """Start from a judged base pool: seed the chains from it and keep it for replay
        (its rows were drawn from the base, whose density is the prior)."""
        self.seed_chains(z, pointwise, phi, log_w, generator)
        if self.replay is not None:
            device = self.target.device
            with torch.no_grad():
                log_p0 = self.target.base.log_prior(z.to(device))
            self.replay.add(z, log_p0, pointwise, phi, log_p0)

    def _replay(self, z: torch.Tensor, log_p0: torch.Tensor, log_q_own: torch.Tensor,
                parts: dict[str, torch.Tensor], features: Features,
                generator: torch.Generator) -> torch.Tensor | None:
        """Keep the step's rows, resample the buffer by exact weights and return ``-mean
        log q`` of the rows drawn (None while the buffer holds no weight)."""
        energy, replay = self.energy, cast(ReplayBuffer, self.replay)
        with torch.no_grad():
            values = [value for _, value in zip(energy.pointwise, parts.values())]
            pointwise = self.config.temper * torch.stack(values).sum(0).float() if values \
                else torch.zeros_like(log_p0)
            phi = energy.phi(features).float() if energy.has_constraints \
                else z.new_zeros(len(z), 0)
            replay.add(z, log_p0, pointwise, phi, log_q_own)
            rows = self.config.replay_rows or len(z)
            drawn, _ = replay.sample(rows, self.target.lam(), generator)
        if not len(drawn):
            return None
        return -self.flow.log_prob(drawn).mean()

    def _energy_at(self, pointwise: torch.Tensor, scaled: torch.Tensor, phi: torch.Tensor,
                   context: torch.Tensor | None) -> torch.Tensor:
        """A chain state's energy (tempered pointwise parts and -φ·λ) at each row's setting."""
        energy = pointwise.float()
        for k, term in enumerate(self.scaled_terms):
            energy = energy + term.weight * cast(torch.Tensor, context)[:, term.column] \
                * scaled[:, k]
        grid = self.energy.lambda_grid
        if grid is not None and context is not None:
            return energy - (phi * grid.at(context).to(phi)).sum(1)
        return energy - phi @ self.target.lam().to(phi.device)

    def _climb(self, z: torch.Tensor, log_p0: torch.Tensor, log_q: torch.Tensor,
               log_q_own: torch.Tensor, parts: dict[str, torch.Tensor], features: Features,
               generator: torch.Generator, flow_context: torch.Tensor | None = None,
               restart: bool = False) -> torch.Tensor:
        """Move each chain by one independent Metropolis–Hastings step proposing the step's
        flow sample (at the row's setting, in a slider stage); return ``-mean log q`` of the
        chains' new states (differentiable). ``restart``: the settings just changed, and
        every chain starts again from the step's flow sample."""
        energy, chains, temper = self.energy, self.chains, self.config.temper
        context = features.context
        with torch.no_grad():
            fixed = [value for term, value in zip(energy.pointwise, parts.values())
                     if not isinstance(term, SliderScaledEnergy)]
            pointwise = temper * torch.stack(fixed).sum(0) if fixed \
                else torch.zeros_like(log_p0)
            # The slider-weighted terms unweighted (judged once more: their features are
            # cached, so this costs the terms' arithmetic only).
            scaled = temper * torch.stack([t.term(features) for t in self.scaled_terms], 1) \
                if self.scaled_terms else chains.scaled.new_zeros(len(z), 0)
            phi = energy.phi(features).float() if energy.has_constraints \
                else chains.phi.new_zeros(len(z), 0)
            uniform = torch.rand(self.config.batch, generator=generator)[self.shard]
        if restart or not bool(chains.ready):
            # The first batch seeds the chains (a proposal always beats an empty state).
            for key, value in (("z", z), ("log_p0", log_p0), ("pointwise", pointwise),
                               ("phi", phi), ("scaled", scaled)):
                getattr(chains, key).copy_(value)
            chains.ready.fill_(1)
            return -log_q.mean()
        # A copy: the states are overwritten in place below, and autograd may keep the input.
        log_q_chain = self.flow.log_prob(chains.z.clone(), flow_context)
        with torch.no_grad():
            new = log_p0.float() - self._energy_at(pointwise, scaled, phi, context) \
                - log_q_own.float()
            old = chains.log_p0 - self._energy_at(chains.pointwise, chains.scaled, chains.phi,
                                                  context) - log_q_chain.detach()
            accept = uniform.to(z.device).log() < new - old
            rows = accept[:, None]
            chains.z.copy_(torch.where(rows, z, chains.z))
            chains.log_p0.copy_(torch.where(accept, log_p0, chains.log_p0))
            chains.pointwise.copy_(torch.where(accept, pointwise, chains.pointwise))
            chains.phi.copy_(torch.where(rows, phi, chains.phi))
            chains.scaled.copy_(torch.where(rows, scaled, chains.scaled))
        return -torch.where(accept, log_q, log_q_chain).mean()

    @property
    def _holds_settings(self) -> bool:
        """Whether rows keep their slider settings for CHAIN_SETTING_STEPS steps (a slider
        stage with chains)."""
        return self.climbing and self.rows_per_setting > 1

    def step_settings(self, step: int, generator: torch.Generator) -> torch.Tensor:
        """The slider settings of a step's rows (physical units; this rank's rows), drawn in
        groups of ``rows_per_setting``: from the step's stream, or, while chains climb, from
        a stream of the step's block of CHAIN_SETTING_STEPS steps."""
        config, size = self.config, self.rows_per_setting
        if self._holds_settings:
            block = step // CHAIN_SETTING_STEPS
            generator = step_generator(config.seed, self.index, -3 * 10**6 - block)
        return sample_settings(self.energy.context, config.batch // size, generator) \
            .repeat_interleave(size, 0)[self.shard]

    def _judged_flow_samples(self, eps: torch.Tensor, generator: torch.Generator, step: int
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                        Features]:
        """Push noise through the flow, decode and judge; return (z, logdet, flow context,
        features). Paired energies decode a second context for the same noise."""
        energy, config = self.energy, self.config
        context = reference = flow_context = None
        if energy.is_conditional and self.rows_per_setting > 1:
            # A slider stage: each setting is shared by a few consecutive rows, so that the
            # score function's baseline compares energies of one target.
            context = self.step_settings(step, generator).to(self.target.device)
            flow_context = normalize_context(energy.context, context)
        elif energy.is_conditional:
            context = sample_context(energy.context, config.batch, generator)[self.shard] \
                .to(self.target.device)
            flow_context = normalize_context(energy.context, context)
        # Autocast covers the control models only. The flow and its log-determinant stay in
        # float32, and so does the generator: StyleGAN2's grouped modulated convolutions ran
        # far slower forward in bf16 than in float32 (docs/benchmarks.md).
        if energy.paired:
            other = sample_context(energy.context, config.batch, generator)[self.shard] \
                .to(self.target.device)
            # One forward pass for both contexts (DDP expects one forward per backward).
            context = cast(torch.Tensor, context)
            sliders = [i for i, p in enumerate(energy.context) if p.control == SLIDER]
            # The reference differs in the control's parameters only: the sliders (of this
            # stage or an earlier one) keep the row's values.
            other[:, sliders] = context[:, sliders]
            both, logdet = self.flow(torch.cat([eps, eps]), torch.cat(
                [cast(torch.Tensor, flow_context), normalize_context(energy.context, other)]))
            z, z_other = both.chunk(2)
            logdet = logdet[: len(eps)]
            reference = self.target.decode(z_other, other).float()
        else:
            z, logdet = self.flow(eps, flow_context)
        images = self.target.decode(z, context).float()
        with self._autocast():
            features = energy.features(images, generator, context=context,
                                       reference_images=reference)
        return z, logdet, flow_context, features

    def _forward_kl(self, log_q: torch.Tensor, log_q_own: torch.Tensor, log_p0: torch.Tensor,
                    log_target: torch.Tensor, generator: torch.Generator
                    ) -> tuple[torch.Tensor, int]:
        """Self-normalised forward KL over the flow's rows and the defensive base rows.

        ``log_q`` is the flow's density at its own rows (differentiable, rows held fixed),
        ``log_q_own`` the same values detached, ``log_p0`` and ``log_target`` the prior and
        unnormalised target there. Returns the term and the base images decoded on this rank.
        """
        log_qs, log_targets, log_drawn, log_p0s = [log_q], [log_target], [log_q_own], [log_p0]
        if self.defensive:
            u = self.target.noise(self.defensive, generator, self.defensive_shard)
            with torch.no_grad():
                images = self.target.base.decode(u).float()
                with self._autocast():
                    _, parts = self.energy.total_and_parts(
                        self.energy.features(images, generator))
                smooth, flat = split_flat(parts, self.energy, self.config.temper)
                log_p0_u = self.target.base.log_prior(u)
            log_q_u = self.flow.log_prob(u)
            log_qs.append(log_q_u)
            log_targets.append(log_p0_u - smooth - flat)
            log_drawn.append(log_q_u.detach())
            log_p0s.append(log_p0_u)
        with torch.no_grad():
            log_m = torch.cat(log_drawn)
            if self.defensive:
                # Every row counts as drawn from the mixture (1 - ε)·q + ε·p0 (the balance
                # heuristic), which bounds each weight by p̃/(ε·p0) = exp(-E)/ε.
                eps_weight = self.config.defensive
                log_m = torch.logaddexp(log_m + math.log1p(-eps_weight),
                                        torch.cat(log_p0s) + math.log(eps_weight))
            weights = snis_weights((torch.cat(log_targets) - log_m).float(), self.group)
        # DDP averages the ranks' gradients: the local sum is scaled by the world size.
        forward = -self.group.world * (weights * torch.cat(log_qs)).sum()
        return forward, len(log_qs[1]) if self.defensive else 0

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.amp and self.target.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def defensive_count(config: TrainConfig) -> int:
    """Base samples per step for the forward term: ``ε·batch`` rounded (0 without the term)."""
    if not config.forward_weight or not config.defensive:
        return 0
    return max(1, round(config.defensive * config.batch))
