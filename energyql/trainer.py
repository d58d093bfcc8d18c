"""The reverse-KL trainer: one latent flow per stage, trained on fresh noise each step.

For a stage with base generator G (prior p0 on its latent) and energy E, the flow
``T: eps -> z`` minimises

    loss = E_eps[ -log p0(T(eps)) + E(G(T(eps))) - log|det dT/deps| ]

which is KL(q || p) up to a constant, with ``p(z) ∝ p0(z) exp(-E(G(z)))``. Noise and
augmentations for step t come from a generator seeded by (seed, stage, t), so a run resumed
from a checkpoint retraces the uninterrupted run exactly.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from energyql import checkpoints
from energyql.distributed import Group
from energyql.distributed import current as current_group
from energyql.energies import ControlModels, StageEnergy, lower_stage
from energyql.energies.base import Features
from energyql.energies.conditional import normalize_context, sample_context
from energyql.energies.constraint import prepare_targets
from energyql.energies.predicate import PredicateEnergy
from energyql.errors import CheckpointError, EnergyQLError, TrainingError
from energyql.flows import FlowConfig, LatentFlow, standard_normal_log_prob
from energyql.generators.base import Generator
from energyql.manifest import FitRecord, StageRecord, TrainRecord
from energyql.moments import MomentFit, fit_lambda
from energyql.progress import Progress
from energyql.runlog import LOG_NAME, RunLog
from energyql.sampler import Artifact, StageSampler, manifest_for, stage_record
from energyql.target import StageTarget, effective_sample_size

# Below this share of effective samples a moment estimate is not trusted.
LOW_ESS_FRACTION = 0.05
# The mass-covering start: from this effective pool size on, it is fitted until a held-out
# part stops improving (checked every START_CHECK_EVERY steps, START_PATIENCE times in a
# row, at most START_MAX_STEPS); below it, warm_start_steps fixed steps.
VALIDATED_START_ESS = 500
START_CHECK_EVERY = 25
START_PATIENCE = 3
START_MAX_STEPS = 1000


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (every stage uses the same ones)."""

    steps: int = 400
    batch: int = 64
    lr: float = 1e-3
    final_lr_fraction: float = 0.05  # cosine decay to this share of lr
    weight_decay: float = 1e-4
    grad_clip: float = 10.0
    seed: int = 0
    device: str = "cpu"
    amp: bool = False  # bf16 autocast of the control models, GPU only
    blocks: int = 8
    width: int = 256
    clip_copies: int = 8
    moment_samples: int = 4096
    refit_every: int = 50
    refit_samples: int = 1024
    # Mass-covering start (see warm_start): base samples judged, and flow-only MLE steps
    # (few: longer fits memorise the pool; 20 beat 50 and 200 on shapes).
    warm_start_samples: int = 0
    warm_start_steps: int = 20
    forward_weight: float = 0.0   # initial weight of the forward-KL term (decays to 0)
    # Weight s of the value term (see _value_term): the flow trains towards
    # p0·exp(-(1 + s)·E), learning from energy values as well as from their gradients.
    value_weight: float = 0.0
    feedback_gain: float = 1.0  # how much of log(target / flow moments) each refit adds to λ
    checkpoint_every: int = 50
    max_bad_steps: int = 10
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StageLog:
    """What happened while training one stage."""

    index: int
    source: str
    steps: int = 0
    seconds: float = 0.0
    skipped_steps: int = 0
    loss: list[float] = field(default_factory=list)
    fits: list[FitRecord] = field(default_factory=list)
    warm_start: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    images: int = 0            # images the generator decoded for this stage
    images_backward: int = 0   # of those, the ones back-propagated through

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageLog:
        """Return the log a checkpoint recorded with :meth:`to_dict`."""
        return cls(**{**data, "fits": [FitRecord(**f) for f in data.get("fits", [])]})


def learning_rate(config: TrainConfig, step: int) -> float:
    """Cosine decay from ``lr`` to ``lr · final_lr_fraction`` over the run (a pure function of
    the step, so a resumed run follows the same schedule)."""
    progress = step / max(1, config.steps - 1)
    floor = config.final_lr_fraction
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _step_generator(seed: int, stage: int, step: int) -> torch.Generator:
    # Distinct, reproducible streams per (seed, stage, step).
    return torch.Generator().manual_seed((seed * 1_000_003 + stage * 10_007 + step) % (2**63))


def _features_in_batches(target: StageTarget, n: int, batch: int, seed_generator: torch.Generator,
                         group: Group, *, use_flow: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw n samples; return (phi, pointwise energy, log p0(z) - log q(z), z) as CPU tensors.

    Noise comes from its own stream, drawn for whole batches on every rank, so that N ranks
    together judge exactly the samples one process would, and each batch is gathered at once,
    so that the rows come back in the order one process would have them.
    """
    noise = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=seed_generator)))
    phis: list[torch.Tensor] = []
    energies: list[torch.Tensor] = []
    log_ratios: list[torch.Tensor] = []
    latents: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, n, batch):
            m = min(batch, n - start)
            z, log_ratio = target.propose(m, noise, use_flow=use_flow, rows=group.shard(m))
            pointwise, phi = target.measure(target.base.decode(z), seed_generator)
            if phi is None:
                phi = torch.zeros(len(z), 0, device=z.device)
            for rows, out in ((phi, phis), (pointwise, energies), (log_ratio, log_ratios),
                              (z, latents)):
                out.append(group.gather(rows).cpu())
    return torch.cat(phis), torch.cat(energies), torch.cat(log_ratios), torch.cat(latents)


def fit_constraints(target: StageTarget, n: int, config: TrainConfig,
                    generator: torch.Generator, group: Group | None = None, *,
                    use_flow: bool) -> MomentFit:
    """Refit every constraint's λ so the stage's final distribution meets its targets.

    With ``use_flow=False`` the samples come from the base generator and the importance
    weights are ``exp(-E_pointwise)``; with the flow they come from the flow and the weights
    also carry ``p0/q``, which is exact because the flow's density is known.

    With the value term (weight s) the flow trains towards pointwise energies tempered by
    ``1 + s`` (see :func:`_value_term`), so the λ it trains with is fitted for that target;
    the exact fit (untempered: what evaluation and corrected samplers aim at) stays
    recoverable as ``λ - offset``, the difference kept in the constraints' ``shift``.
    """
    phi, pointwise, log_ratio, _ = _features_in_batches(
        target, n, config.batch * 4, generator, group or Group(), use_flow=use_flow)
    # All constraints are fitted jointly: their features may overlap
    # (e.g. debias(a) & uniform(a x b)).
    moments = target.moments_target()
    fit = fit_lambda(phi, moments, -pointwise + log_ratio)
    trained = fit if not config.value_weight else \
        fit_lambda(phi, moments, -(1 + config.value_weight) * pointwise + log_ratio)
    feedback = target.offset() - target.shift()
    if use_flow:
        # The importance-weighted fit is exact for the target, but the flow only approximates
        # the target (reverse KL is mode-seeking). Feed back what the flow's own samples show,
        # as an offset that tilts the flow further until its samples meet the target.
        flow_moments = phi.mean(0).clamp(min=1e-4)
        feedback = feedback + config.feedback_gain * (moments.clamp(min=1e-4).log()
                                                      - flow_moments.log())
        feedback = feedback - feedback.mean()
        fit = replace(fit, flow_moments=flow_moments)
    shift = trained.lam - fit.lam
    fit = replace(fit, lam=trained.lam + feedback)
    target.set_lambda(fit.lam, feedback + shift, shift)
    return fit


def warm_start(target: StageTarget, config: TrainConfig, generator: torch.Generator,
               group: Group | None = None) -> dict[str, Any]:
    """Move the flow towards the target's modes by weighted maximum likelihood; return a record.

    Reverse KL learns only from where the flow already puts mass, so a target that is rare
    under the base (blue triangles are 0.8 % of the shapes generator's samples) gives it
    almost no gradient towards that mode. Base samples weighted by ``exp(-E)`` (pointwise
    energies and the fitted constraints) describe the target wherever the base covers it; a
    short phase of weighted MLE on them (forward KL, mass-covering) starts the flow there, and
    reverse KL then refines it. Nothing here changes the objective the stage converges to.
    """
    flow = target.flow
    if flow is None:
        raise TrainingError("warm_start needs the stage's flow", hint="give the StageTarget a flow")
    # Minibatches get their own stream, drawn first: judging the pool may consume the other
    # one differently on each rank (each draws augmentations for its own rows).
    draws = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
    phi, pointwise, _, z = _features_in_batches(
        target, config.warm_start_samples, config.batch * 4, generator, group or Group(),
        use_flow=False)
    log_w = -(1 + config.value_weight) * pointwise  # the target training aims at
    if phi.shape[1]:
        log_w = log_w + phi @ target.lam()
    weights = torch.softmax(log_w.double(), 0).float()
    ess = effective_sample_size(log_w)
    record: dict[str, Any] = {"samples": len(z), "ess": round(ess, 1), "steps": 0}
    if ess < 2:
        return record  # one point says nothing about the target's spread
    optimizer = torch.optim.Adam([p for p in flow.parameters() if p.requires_grad], lr=config.lr)
    # A pool with many effective samples is fitted until a held-out fifth of it stops
    # improving; a small one (a rare target) gets the fixed, short fit, because its held-out
    # part is too small to tell a better fit from noise.
    held_out = None
    fit_rows = torch.arange(len(z))
    if ess >= VALIDATED_START_ESS:
        order = torch.randperm(len(z), generator=draws)
        held_out, fit_rows = order[: len(z) // 5], order[len(z) // 5:]
        held_weights = weights[held_out] / weights[held_out].sum()
    fit_weights = weights[fit_rows] / weights[fit_rows].sum()

    def held_out_nll() -> float:
        with torch.no_grad():
            rows = cast(torch.Tensor, held_out)
            return float(-(held_weights.to(config.device)
                           * flow.log_prob(z[rows].to(config.device))).sum())

    best = held_out_nll() if held_out is not None else math.inf
    best_state = {k: v.clone() for k, v in flow.state_dict().items()}
    worse = 0
    nll = []
    for step in range(1, (START_MAX_STEPS if held_out is not None
                          else config.warm_start_steps) + 1):
        rows = fit_rows[torch.multinomial(fit_weights, config.batch, replacement=True,
                                          generator=draws)]
        loss = -flow.log_prob(z[rows].to(config.device)).mean()
        if not torch.isfinite(loss):
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), config.grad_clip)
        optimizer.step()
        nll.append(round(float(loss.detach()), 3))
        if held_out is not None and step % START_CHECK_EVERY == 0:
            value = held_out_nll()
            if value < best - 1e-3:
                best, worse = value, 0
                best_state = {k: v.clone() for k, v in flow.state_dict().items()}
            else:
                worse += 1
                if worse >= START_PATIENCE:
                    break
    if held_out is not None:
        flow.load_state_dict(best_state)  # the fit that did best on the held-out part
        record["held_out_nll"] = round(best, 3)
    record.update(steps=len(nll), nll_first=nll[0] if nll else None,
                  nll_last=nll[-1] if nll else None)
    return record


def _forward_kl(flow: LatentFlow, eps: torch.Tensor, z: torch.Tensor, per_sample: torch.Tensor,
                group: Group) -> torch.Tensor:
    """Self-normalised estimate of KL(p || q) (up to a constant) from the batch in hand.

    Reverse KL follows the energy's gradient, which is nearly zero inside a mode and steep at
    its edge when the generator maps modes sharply (the shapes generator does): the flow can
    spread into a neighbouring mode without feeling it. The weights ``p/q`` of the flow's own
    samples see energy *values* instead: pulling ``log q`` up where they are large moves mass
    towards under-covered parts of the target (mass-covering). ``per_sample + log N(eps)`` is
    ``log q - log p`` up to the target's normalising constant, which the softmax removes.
    Under torchrun the weights are normalised over the global batch, and the local sum is
    scaled by the world size because DDP averages the ranks' gradients.
    """
    with torch.no_grad():
        log_w = -(per_sample + standard_normal_log_prob(eps)).float()
        weights = (log_w - torch.logsumexp(group.gather(log_w), 0)).exp()
    return -group.world * (weights * flow.log_prob(z.detach())).sum()


def _value_term(flow: LatentFlow, z: torch.Tensor, energy: torch.Tensor,
                group: Group) -> torch.Tensor:
    """Score-function estimate of the gradient of E_q[E]: ``mean((E - Ē) · log q(z))``.

    Its gradient ``E_q[(E - Ē) ∇ log q]`` (``z`` held fixed, ``Ē`` the global batch mean as
    a baseline) is the energy's gradient estimated from energy *values*: it lowers the flow's
    density where the energy is high even where ``∇E`` is zero. Inside a wrong mode of a
    generator with sharp mode boundaries (the shapes generator's soft shape blend saturates
    there) the pathwise gradient is nearly zero and that mass never moves; this term moves
    it. Added with weight s to the pathwise loss, the flow trains towards
    ``p0·exp(-(1 + s)·E)``. DDP averages the ranks' gradients of these local means.
    """
    with torch.no_grad():
        values = energy.detach().float()
        advantage = values - group.gather(values).mean()
    return (advantage * flow.log_prob(z.detach())).mean()


def _constraints_scaled(total: torch.Tensor, parts: dict[str, torch.Tensor],
                        energy: StageEnergy, factor: float) -> torch.Tensor:
    """``total`` with the constraint terms' part multiplied by ``factor``.

    With the value term (weight s) a term's effective weight is ``1 + s``. Constraint terms
    enter at ``1 / (1 + s)`` so that theirs stays 1: λ is fitted for weight 1, and its
    feedback loop (a log-ratio added each refit) would overshoot at ``1 + s`` times the gain.
    They still get the value term's share of the gradient, which moves mass between modes.
    """
    # parts() lists the pointwise terms first, then the constraints (texts may repeat).
    constraint_part = torch.stack(list(parts.values())[-len(energy.constraints):]).sum(0)
    return total + (factor - 1) * constraint_part


def _fit_record(fit: MomentFit, step: int, target: StageTarget) -> FitRecord:
    constraints = target.constraints() if target.energy is not None else []
    return FitRecord(
        step=step,
        ess=round(fit.ess, 1),
        samples=fit.samples,
        max_moment_error=round(fit.max_error, 5),
        flow_max_moment_error=(round(float((fit.flow_moments - fit.target).abs().max()), 5)
                               if fit.flow_moments is not None else None),
        constraints={
            c.text: {"lambda": [round(v, 4) for v in lam.tolist()],
                     "achieved": [round(v, 4) for v in ach.tolist()],
                     "target": [round(v, 4) for v in c.target.tolist()]}
            for c, lam, ach in zip(constraints, target.split(fit.lam), target.split(fit.achieved))
        },
    )


@dataclass(frozen=True)
class StepInfo:
    """Where training stands after a step (what ``on_step`` callbacks receive).

    ``images`` counts every image the generator decoded for the stage so far (the λ fits,
    the start's pool, the steps; each image once), ``images_backward`` those of them that
    were back-propagated through (the steps' images). ``sampler`` samples the flow as it is.
    """

    stage: int
    step: int
    steps: int
    images: int
    images_backward: int
    seconds: float
    loss: float
    sampler: StageSampler


@dataclass
class StepParts:
    """What one step of a stage's objective computed, besides the loss."""

    energies: dict[str, torch.Tensor]  # each term's per-sample energy, keyed by its text
    features: Features
    z: torch.Tensor
    logdet: torch.Tensor


class StageObjective(nn.Module):
    """Creates the per-step loss of one stage (what DistributedDataParallel wraps).

    ``forward(step)`` draws the step's noise (and context) from the (seed, stage, step)
    stream, pushes it through the flow (both contexts in one pass for paired energies), and
    returns ``(loss, parts)`` with ``loss = mean(-log p0(z) + E(G(z)) - logdet)`` plus the
    decaying forward-KL term. Only the flow is a registered submodule: it is all DDP syncs.

    Arguments:
        target: the stage's base, flow and energy.
        config: the run's settings.
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

    def forward(self, step: int) -> tuple[torch.Tensor, StepParts]:
        config, target, group = self.config, self.target, self.group
        base, energy = target.base, cast(StageEnergy, target.energy)  # checked in __init__
        generator = _step_generator(config.seed, self.index, step)
        eps = target.noise(config.batch, generator, self.shard)
        context = reference = flow_context = None
        if energy.is_conditional:
            # Requested values, and for paired energies a second context for the same noise.
            context = sample_context(energy.context, config.batch, generator)[self.shard] \
                .to(target.device)
            flow_context = normalize_context(energy.context, context)
        # Autocast covers the control models only. The flow and its log-determinant stay in
        # float32, and so does the generator: StyleGAN2's grouped modulated convolutions ran
        # far slower forward in bf16 than in float32 (docs/benchmarks.md).
        if energy.paired:
            other = sample_context(energy.context, config.batch, generator)[self.shard] \
                .to(target.device)
            # One forward pass for both contexts (DDP expects one forward per backward).
            both, logdet = self.flow(torch.cat([eps, eps]), torch.cat(
                [cast(torch.Tensor, flow_context), normalize_context(energy.context, other)]))
            z, z_other = both.chunk(2)
            logdet = logdet[: len(eps)]
            reference = base.decode(z_other).float()
        else:
            z, logdet = self.flow(eps, flow_context)
        images = base.decode(z).float()
        with self._autocast():
            features = energy.features(images, generator, context=context,
                                       reference_images=reference)
            total, parts = energy.total_and_parts(features)
        valued = bool(config.value_weight) and not energy.is_conditional
        if valued and energy.constraints:
            total = _constraints_scaled(total, parts, energy, 1 / (1 + config.value_weight))
        per_sample = -base.log_prior(z) + total - logdet
        loss = per_sample.mean()
        if config.forward_weight and not energy.is_conditional:
            # Decays linearly to 0: the term finds and covers the target's modes early,
            # and the last steps are reverse KL alone, which sharpens what was found.
            weight = config.forward_weight * (1 - step / config.steps)
            loss = loss + weight * _forward_kl(self.flow, eps, z, per_sample, group)
        if valued:
            loss = loss + config.value_weight * _value_term(self.flow, z, total, group)
        return loss, StepParts(parts, features, z, logdet)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.amp and self.target.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def _term_means(parts: dict[str, torch.Tensor]) -> dict[str, float]:
    """The loss's parts for the log: each term's mean energy over the batch."""
    return {text: float(value.detach().float().mean()) for text, value in parts.items()}


def _running_figures(parts: dict[str, torch.Tensor], energy: StageEnergy,
                     features: Features) -> dict[str, float]:
    """The stage's target figures on the step's batch: the share meeting the predicates, and
    each constraint's KL from the batch's (argmax) distribution to its target."""
    figures: dict[str, float] = {}
    predicates = [t for t in energy.pointwise if isinstance(t, PredicateEnergy)]
    if predicates:
        # A predicate holds for an image when its probability exceeds 1/2, i.e. E < log 2.
        holds = torch.stack([parts[t.text].detach() < math.log(2) for t in predicates]).all(0)
        figures["on-target share"] = float(holds.float().mean())
    for constraint in energy.constraints:
        with torch.no_grad():
            phi = constraint.phi(features)
            shares = torch.bincount(phi.argmax(1), minlength=phi.shape[1]).float() / len(phi)
            target = constraint.target.clamp(min=1e-12)
            kl = (shares * (shares.clamp(min=1e-12) / target).log()).sum()
        figures[f"KL {' x '.join(constraint.attrs)}"] = float(kl)
    return figures




def _save_checkpoint(directory: Path, index: int, step: int, flow: LatentFlow,
                     optimizer: torch.optim.Optimizer, energy: StageEnergy, log: StageLog,
                     identity: checkpoints.CheckpointIdentity) -> None:
    """Write the stage's checkpoint; ``identity`` says which program and settings it is of."""
    checkpoints.save(directory, index, step, identity, _checkpoint_tensors(flow, energy),
                     optimizer.state_dict(), log.to_dict())


def _checkpoint_tensors(flow: LatentFlow, energy: StageEnergy) -> dict[str, torch.Tensor]:
    tensors = {f"flow.{k}": v for k, v in flow.state_dict().items()}
    tensors.update({f"lam.{i}": c.lam for i, c in enumerate(energy.constraints)})
    tensors.update({f"offset.{i}": c.offset for i, c in enumerate(energy.constraints)})
    tensors.update({f"shift.{i}": c.shift for i, c in enumerate(energy.constraints)})
    return tensors


def _load_checkpoint(directory: Path, index: int, flow: LatentFlow,
                     optimizer: torch.optim.Optimizer, energy: StageEnergy, device: str,
                     identity: checkpoints.CheckpointIdentity, steps: int
                     ) -> tuple[int, StageLog] | None:
    """Restore a stage's checkpoint; return ``(step, log)`` or None if the stage has none.

    A checkpoint of another program or other settings, or one that does not fit this flow,
    is a CheckpointError naming the file and what differs; nothing is restored from it.
    """
    restored = checkpoints.load(directory, index, identity, _checkpoint_tensors(flow, energy),
                                [p for g in optimizer.param_groups for p in g["params"]], steps)
    if restored is None:
        return None
    weights = checkpoints.paths(directory, index)[0]
    try:
        log = StageLog.from_dict(restored.log)
    except (TypeError, ValueError, KeyError):
        raise CheckpointError(f"{weights}: field 'log' does not describe a stage's training",
                              hint=checkpoints._HINT) from None
    try:
        optimizer.load_state_dict(restored.optimizer_state)
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{checkpoints.paths(directory, index)[1]} does not fit this "
                              f"stage's optimizer: {str(error).splitlines()[0]}",
                              hint=checkpoints._HINT) from None
    tensors = {k: v.to(device) for k, v in restored.tensors.items()}
    flow.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("flow.")})
    for i, constraint in enumerate(energy.constraints):
        constraint.lam.copy_(tensors[f"lam.{i}"])
        constraint.offset.copy_(tensors[f"offset.{i}"])
        constraint.shift.copy_(tensors[f"shift.{i}"])
    return restored.step, log


def train_stage(base: Generator, energy: StageEnergy, config: TrainConfig, *, index: int = 1,
                source: str = "", checkpoint_dir: Path | None = None, resume: bool = False,
                progress: bool | Progress = True, run_log: RunLog | None = None,
                on_step: Callable[[StepInfo], None] | None = None
                ) -> tuple[StageSampler, StageLog]:
    """Train one stage's flow against ``energy`` over ``base``; return its sampler and log.

    Under torchrun every rank runs this with the same config: each evaluates its shard of the
    global batch and DistributedDataParallel averages the gradients. ``progress`` (a bool or
    a shared :class:`~energyql.progress.Progress`) shows the λ fits, the start and the steps
    on stderr; ``run_log`` gets one record per step and per fit (``log.jsonl``).
    ``on_step`` is called after every step with a :class:`StepInfo` (it must not change the
    flow; sampling from ``info.sampler`` under ``torch.no_grad()`` is what it is for).
    """
    group = current_group()
    prog = progress if isinstance(progress, Progress) else \
        Progress(enabled=progress and group.is_main)
    if config.batch % group.world:
        raise EnergyQLError(f"the batch ({config.batch}) must divide evenly over "
                            f"{group.world} ranks",
                            hint=f"use a --batch that is a multiple of {group.world}")
    device = config.device
    if getattr(base, "context_dim", 0):
        raise EnergyQLError("a stage cannot be trained on top of a conditional stage",
                            hint="make the conditional stage (pose(...)) the last one")
    flow_config = FlowConfig(dim=base.latent_dim, context_dim=len(energy.context),
                             blocks=config.blocks, width=config.width,
                             seed=config.seed * 100 + index)
    flow = LatentFlow(flow_config).to(device)
    target = StageTarget(base.to(device).eval().requires_grad_(False), energy.to(device), flow,
                         device=device)
    params = [p for p in flow.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    log = StageLog(index=index, source=source)
    start = 0
    restore_images = config.moment_samples if prepare_targets(
        energy, base, config.moment_samples, seed=config.seed, batch=config.batch * 4) else 0
    identity = checkpoints.identity_for(base, source, index, config)
    restored = None
    if resume:
        if checkpoint_dir is None or not checkpoints.any_checkpoint(checkpoint_dir):
            # Starting over silently would hide a wrong --out or a lost folder.
            raise CheckpointError(
                f"nothing to resume: '{checkpoint_dir}' holds no stage checkpoint"
                if checkpoint_dir is not None else "nothing to resume: no output folder given",
                hint="run without --resume to start training from the beginning")
        # A later stage with no checkpoint yet (killed before its first) starts over.
        restored = _load_checkpoint(checkpoint_dir, index, flow, optimizer, energy, device,
                                    identity, config.steps)
    if restored is not None:
        start, log = restored
    else:
        log.images += restore_images
    if restored is None and energy.has_constraints:
        with prog.phase(f"stage {index}: fitting λ on {config.moment_samples:,} base "
                        "samples") as phase:
            fit = fit_constraints(target, config.moment_samples, config,
                                  _step_generator(config.seed, index, -1), group, use_flow=False)
            phase.note(ess=round(fit.ess), max_error=fit.max_error)
        log.images += config.moment_samples
        _record_fit(fit, 0, target, log, run_log)
        _warn_low_ess(fit, log, "base samples")
    if restored is None and config.warm_start_samples and not energy.is_conditional:
        with prog.phase(f"stage {index}: mass-covering start on "
                        f"{config.warm_start_samples:,} base samples") as phase:
            log.warm_start = warm_start(target, config,
                                        _step_generator(config.seed, index, -10**6), group)
            log.images += config.warm_start_samples
            phase.note(**{k: v for k, v in log.warm_start.items()
                          if k in ("ess", "steps", "nll_last") and v is not None})
    objective = StageObjective(target, config, index, group)
    stepped: nn.Module = objective
    if group.active:
        from torch.nn.parallel import DistributedDataParallel

        # Wrapping copies rank 0's parameters to every rank (after any warm start).
        stepped = DistributedDataParallel(objective, device_ids=[torch.device(device).index]
                                          if device.startswith("cuda") else None)
    bad_in_a_row = 0
    # Images one step decodes (both contexts of a paired energy), all back-propagated.
    step_images = config.batch * (2 if energy.paired else 1)
    began = time.perf_counter() - log.seconds
    with prog.task(f"stage {index}: training", total=config.steps, start=start) as bar:
        for step in range(start, config.steps):
            loss, parts = stepped(step)
            log.images += step_images
            log.images_backward += step_images
            # Every rank must take the same branch, or the gradient all-reduce would hang.
            finite = group.all_true(bool(torch.isfinite(loss)), device)
            if finite:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                finite = bool(torch.isfinite(norm))
            if not finite:
                log.skipped_steps += 1
                bad_in_a_row += 1
                if bad_in_a_row >= config.max_bad_steps:
                    raise TrainingError(
                        f"stage {index}: the loss was not finite for {bad_in_a_row} steps in a row "
                        f"(at step {step}); the term that produced it: "
                        f"{_non_finite_term(parts, base)}",
                        hint="lower --lr, or reduce the weight of that term")
                optimizer.zero_grad(set_to_none=True)
                continue
            bad_in_a_row = 0
            rate = learning_rate(config, step)
            for group_ in optimizer.param_groups:
                group_["lr"] = rate
            optimizer.step()
            value = float(loss.detach())
            log.loss.append(round(value, 5))
            log.steps = step + 1
            figures = _running_figures(parts.energies, energy, parts.features)
            if run_log is not None:
                run_log.step(stage=index, step=step + 1, loss=value,
                             parts=_term_means(parts.energies), figures=figures, lr=rate,
                             images=log.images)
            refit_due = bool(config.refit_every) and (step + 1) % config.refit_every == 0
            if energy.has_constraints and refit_due and step + 1 < config.steps:
                with prog.phase(f"stage {index}: refitting λ on {config.refit_samples:,} flow "
                                "samples") as phase:
                    fit = fit_constraints(target, config.refit_samples, config,
                                          _step_generator(config.seed, index, -(step + 2)), group,
                                          use_flow=True)
                    phase.note(ess=round(fit.ess), max_error=fit.max_error)
                log.images += config.refit_samples
                _record_fit(fit, step + 1, target, log, run_log)
            log.seconds = time.perf_counter() - began
            checkpoint_due = (step + 1) % config.checkpoint_every == 0
            if checkpoint_dir is not None and group.is_main and checkpoint_due:
                _save_checkpoint(checkpoint_dir, index, step + 1, flow, optimizer, energy, log,
                                 identity)
            bar.update(step + 1, loss=value, **figures)
            if on_step is not None:
                on_step(StepInfo(index, step + 1, config.steps, log.images, log.images_backward,
                                 log.seconds, value,
                                 StageSampler(base, flow, index, source, energy.context)))
    log.seconds = time.perf_counter() - began
    if checkpoint_dir is not None and group.is_main and start < config.steps:
        # A finished stage is checkpointed too, so that --resume never trains it again.
        _save_checkpoint(checkpoint_dir, index, config.steps, flow, optimizer, energy, log,
                         identity)
    flow.eval()
    return StageSampler(base, flow, index, source, energy.context), log


def _record_fit(fit: MomentFit, step: int, target: StageTarget, log: StageLog,
                run_log: RunLog | None) -> None:
    """Keep a fit in the stage's log (the manifest) and in ``log.jsonl``."""
    record = _fit_record(fit, step, target)
    log.fits.append(record)
    if run_log is not None:
        run_log.fit(stage=log.index, step=step,
                    lam={text: c["lambda"] for text, c in record.constraints.items()},
                    shares={text: c["achieved"] for text, c in record.constraints.items()},
                    ess=record.ess, samples=record.samples,
                    max_moment_error=record.max_moment_error,
                    flow_max_moment_error=record.flow_max_moment_error)


def _warn_low_ess(fit: MomentFit, log: StageLog, where: str) -> None:
    if fit.ess_fraction < LOW_ESS_FRACTION:
        message = (f"stage {log.index}: the moment fit on {where} rests on an effective sample "
                   f"size of {fit.ess:.0f} of {fit.samples}; λ may be unreliable (it is refitted "
                   f"on the flow's own samples during training)")
        log.warnings.append(message)
        warnings.warn(message, stacklevel=3)


def _non_finite_term(parts: StepParts, base: Generator) -> str:
    for text, value in parts.energies.items():
        if not torch.isfinite(value).all():
            return f"'{text}'"
    if not torch.isfinite(parts.logdet).all():
        return "the flow's log-determinant"
    if not torch.isfinite(base.log_prior(parts.z)).all():
        return "the latent prior"
    return "the gradients (every term was finite)"


def _controls_record(models: ControlModels) -> dict[str, Any]:
    """Which judges trained the artifact (the world's CLIP and attribute models)."""
    from energyql.controls.attributes import resolve_face_backend
    from energyql.controls.clip import default_clip_spec

    record: dict[str, Any] = {"clip": default_clip_spec(models.catalog),
              "attributes": sorted({a.model for a in models.catalog.attributes})}
    if "face-attributes" in record["attributes"]:
        kind, path, _ = resolve_face_backend()
        record["face_attributes"] = kind if path is None else f"{kind}:{path}"
    if models.notices:
        record["notices"] = list(models.notices)
    return record


def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def _stage_record(sampler: StageSampler, log: StageLog | None = None,
                  config: TrainConfig | None = None,
                  energy: StageEnergy | None = None) -> StageRecord:
    """Return the manifest record of a stage (with its training record when it was trained)."""
    record = stage_record(sampler)
    if log is None or config is None or energy is None:
        return record
    constraints = list(energy.constraints)
    return replace(
        record,
        # λ the flow trained with (the exact fit plus the feedback offset), and the exact
        # fit alone: the target that corrected samplers and evaluation aim at.
        lam={c.text: tuple(round(v, 6) for v in c.lam.tolist()) for c in constraints},
        lam_exact={c.text: tuple(round(v, 6) for v in (c.lam - c.offset).tolist())
                   for c in constraints},
        train=TrainRecord(config.to_dict(), round(log.seconds, 2), log.skipped_steps,
                          log.images, log.images_backward),
        fits=tuple(log.fits), warm_start=log.warm_start, warnings=tuple(log.warnings),
        final_loss=log.loss[-1] if log.loss else None)


def train(program: Any, gen: str | Generator = "shapes", config: TrainConfig | None = None, *,
          out: str | Path | None = None, resume: bool = False, start: Artifact | None = None,
          progress: bool | Progress = True, on_step: Callable[[StepInfo], None] | None = None,
          **generator_options: Any) -> Artifact:
    """Train every stage of a program; return the controlled sampler as an Artifact.

    Arguments:
        program: a source string or a compiled :class:`energyql.Program`.
        gen: a generator name, ``scheme:PATH`` or a Generator.
        config: training settings (steps, batch, lr, seed, device, ...).
        out: directory for checkpoints and the artifact (written atomically); needed to resume.
        resume: continue from the checkpoints in ``out``.
        start: an existing artifact whose stages come first (``--from``).
        progress: show progress on stderr (a bool, or a shared Progress).
        on_step: called after every training step with a :class:`StepInfo`.

    With ``out``, every step and λ fit is appended to ``out/log.jsonl`` (a resumed run
    continues it). This is the low-level call: ``energyql.train`` adds the world's default
    settings, keyword settings and the report.

    Example:
        >>> art = energyql.train('color == red & shape == circle', gen="shapes")  # doctest: +SKIP
        >>> images = art.sample(16, seed=0)                                        # doctest: +SKIP
    """
    from energyql.generators import load as load_generator
    from energyql.lang.api import compile as compile_program
    from energyql.lang.compose import extend, joined_source

    config = config or TrainConfig()
    _set_threads(config.threads)
    base: Generator
    if start is not None:
        base = start.sampler
    elif isinstance(gen, Generator):
        base = gen
    else:
        base = load_generator(gen, device=config.device, **generator_options)
    source = program if isinstance(program, str) else str(program)
    program = compile_program(program) if isinstance(program, str) else program
    stages = list(program.checked(base.catalog).stages)
    if start is not None:
        # New stages are checked after the artifact's own, so that what they refer to
        # (debias(clip_bias): what the earlier stages asked for and constrained) is the whole
        # program's, exactly as if it had been trained in one go.
        whole = extend(start.manifest.canonical, program)  # graphs, not text
        stages = list(whole.checked(base.catalog).stages)[-len(stages):]
    models = ControlModels(base.catalog, device=config.device, clip_copies=config.clip_copies)
    out = Path(out) if out is not None else None
    # Training on a trained sampler continues its stage numbering (stage k+1 on top of k).
    earlier = base.stages if isinstance(base, StageSampler) else []
    stage_records = list(start.manifest.stages) if start is not None else [
        stage_record(s) for s in earlier]
    # Every stage's energy is built (its control models loaded) before anything is written:
    # missing weights fail the run before it creates files or trains a stage.
    energies = [lower_stage(stage, models) for stage in stages]
    sampler: Generator = base
    group = current_group()
    prog = progress if isinstance(progress, Progress) else \
        Progress(enabled=progress and group.is_main)
    run_log = None
    if out is not None:
        if not resume and group.is_main:
            (out / LOG_NAME).unlink(missing_ok=True)  # a fresh run starts a fresh log
        run_log = RunLog(out, enabled=group.is_main)
    try:
        for k, (stage, energy) in enumerate(zip(stages, energies),
                                            start=len(earlier) + 1):
            sampler, log = train_stage(sampler, energy, config, index=k, source=str(stage),
                                       checkpoint_dir=out, resume=resume, progress=prog,
                                       run_log=run_log, on_step=on_step)
            stage_records.append(_stage_record(sampler, log, config, energy))
    finally:
        if run_log is not None:
            run_log.close()
    if not isinstance(sampler, StageSampler):
        raise EnergyQLError("the program has no stage to train",
                            hint="write at least one term, e.g. 'color == red'")
    canonical = " | then ".join(s.source for s in sampler.stages)
    if start is not None:
        source = joined_source(start.manifest.source, source, canonical, base.catalog)
    elif earlier:
        source = canonical
    manifest = manifest_for(sampler, source=source, canonical=canonical,
                            controls=_controls_record(models), stages=tuple(stage_records))
    artifact = Artifact(sampler, manifest)
    if out is not None and current_group().is_main:
        artifact.save(out)
    current_group().barrier()
    return artifact


__all__ = ["StageLog", "StageObjective", "StepInfo", "StepParts", "TrainConfig",
           "fit_constraints", "train", "train_stage", "warm_start"]
