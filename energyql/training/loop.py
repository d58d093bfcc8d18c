"""The training loop: one flow per stage, trained on fresh noise each step.

Noise and augmentations for step t come from a stream seeded by (seed, stage, t), so a run
resumed from a checkpoint retraces the uninterrupted run exactly. The loop only steps the
objective (:mod:`energyql.training.objective`); λ fits are :mod:`energyql.training.fit`,
checkpoints :mod:`energyql.training.resume`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from energyql import checkpoints
from energyql.distributed import Group
from energyql.distributed import current as current_group
from energyql.energies import StageEnergy
from energyql.energies.base import Features
from energyql.energies.constraint import prepare_targets
from energyql.energies.predicate import PredicateEnergy
from energyql.energies.sliders import SLIDER
from energyql.errors import CheckpointError, EnergyQLError, TrainingError
from energyql.flows import LatentFlow, flow_config_for
from energyql.generators.base import Generator
from energyql.manifest import FitRecord
from energyql.progress import Progress
from energyql.runlog import RunLog
from energyql.sampler import StageSampler
from energyql.target import StageTarget, closeness
from energyql.training.config import TrainConfig, learning_rate, step_generator
from energyql.training.fit import (
    fit_constraints,
    fit_lambda_grid,
    fit_record,
    grid_fit_images,
    refit_grid_offsets,
    slider_warm_start,
    warm_start,
    warn_low_ess,
)
from energyql.training.objective import StageObjective, StepParts
from energyql.training.resume import restore_stage, save_stage

# A slider stage judges this many times moment_samples for its λ grid.
GRID_POOL_FACTOR = 4
# Below this ESS/N a run says that its samples differ from the exact target.
LOW_CLOSENESS = 0.1


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
    # ESS/N and KL̂ of the trained flow against the stage's exact target (its own samples)
    closeness: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageLog:
        """Return the log a checkpoint recorded with :meth:`to_dict`."""
        return cls(**{**data, "fits": [FitRecord(**f) for f in data.get("fits", [])]})


@dataclass(frozen=True)
class StepInfo:
    """Where training stands after a step (what ``on_step`` callbacks receive).

    ``images`` counts every image the generator decoded for the stage so far (the λ fits,
    the start's pool, the steps and their defensive base samples; each image once),
    ``images_backward`` those that were back-propagated through (the steps' flow samples).
    ``sampler`` samples the flow as it is.
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
class StageRun:
    """The pieces of one stage under training, built by :func:`build_stage`."""

    index: int
    source: str
    config: TrainConfig
    target: StageTarget
    flow: LatentFlow
    optimizer: torch.optim.Optimizer
    log: StageLog
    identity: checkpoints.CheckpointIdentity
    group: Group
    # The objective's own state that a checkpoint carries (its persistent chains).
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def energy(self) -> StageEnergy:
        return self.target.energy  # type: ignore[return-value]  # always set by build_stage

    def sampler(self) -> StageSampler:
        return StageSampler(self.target.base, self.flow, self.index, self.source,
                            self.energy.context)

    def save(self, directory: Path | None, step: int) -> None:
        if directory is not None and self.group.is_main:
            save_stage(directory, self.index, step, self.flow, self.optimizer, self.energy,
                       self.log.to_dict(), self.identity, self.extra)

    def record_fit(self, fit: Any, step: int, run_log: RunLog | None) -> None:
        """Keep a λ fit in the stage's log (the manifest) and in ``log.jsonl``."""
        record = fit_record(fit, step, self.target)
        self.log.fits.append(record)
        if run_log is not None:
            run_log.fit(stage=self.index, step=step,
                        lam={text: c["lambda"] for text, c in record.constraints.items()},
                        shares={text: c["achieved"] for text, c in record.constraints.items()},
                        ess=record.ess, samples=record.samples,
                        max_moment_error=record.max_moment_error,
                        flow_max_moment_error=record.flow_max_moment_error)


def check_base_context(base: Generator, energy: StageEnergy) -> None:
    """A stage may stand on a conditional stage only if that stage's context is sliders
    which this stage takes too (a later stage sees an earlier slider as its own context)."""
    params = getattr(base, "context_params", ())
    if any(p.control != SLIDER for p in params):
        raise EnergyQLError("a stage cannot be trained on top of a conditional stage "
                            "(pose)", hint="make the conditional stage (pose(...)) the last one")
    missing = [p.name for p in params if p not in energy.context]
    if missing:
        raise EnergyQLError(f"the stage does not take its base's slider(s) "
                            f"{', '.join(missing)} as context",
                            hint="lower each stage with Program.stage_sliders(k)")


def build_stage(base: Generator, energy: StageEnergy, config: TrainConfig, index: int,
                source: str, group: Group) -> StageRun:
    """Return a fresh stage: its flow at the identity, target, optimizer, log and identity."""
    if config.batch % group.world:
        raise EnergyQLError(f"the batch ({config.batch}) must divide evenly over "
                            f"{group.world} ranks",
                            hint=f"use a --batch that is a multiple of {group.world}")
    check_base_context(base, energy)
    device = config.device
    # Fourier features of the sliders only where a slider scales a term's weight on a fixed
    # base: that target turns fast over a small part of the range (portraits' glasses share
    # goes 0.27 -> 0.87 -> 0.99 at w = 0, 0.3, 0.6). A dist slider's target moves smoothly and
    # lost evenness with them (portraits' gender slider: largest gap to the request 0.070 with
    # 6 features, 0.043 without, docs/sliders.md); a stage after a slider stage held 0.26
    # where its target is 0.30 (tests/test_sliders_training.py).
    frequencies = config.slider_frequencies \
        if energy.has_weight_slider and not getattr(base, "context_params", ()) else 0
    flow = LatentFlow(flow_config_for(base, blocks=config.blocks, width=config.width,
                                      context_dim=len(energy.context),
                                      seed=config.seed * 100 + index,
                                      frequencies=frequencies,
                                      coupling=config.coupling)).to(device)
    target = StageTarget(base.to(device).eval().requires_grad_(False), energy.to(device), flow,
                         device=device)
    optimizer = torch.optim.AdamW([p for p in flow.parameters() if p.requires_grad],
                                  lr=config.lr, weight_decay=config.weight_decay)
    return StageRun(index, source, config, target, flow, optimizer, StageLog(index, source),
                    checkpoints.identity_for(base, source, index, config), group)


def prepare_stage(run: StageRun, objective: StageObjective, checkpoint_dir: Path | None,
                  resume: bool, prog: Progress, run_log: RunLog | None) -> int:
    """Restore the stage's checkpoint, or estimate its restore targets, fit λ on base samples
    and run the optional start (whose pool also seeds the objective's chains); return the
    step training starts from."""
    config, target, energy, log = run.config, run.target, run.energy, run.log
    restore_images = config.moment_samples if prepare_targets(
        energy, target.base, config.moment_samples, seed=config.seed,
        batch=config.batch * 4) else 0
    if resume:
        if checkpoint_dir is None or not checkpoints.any_checkpoint(checkpoint_dir):
            # Starting over silently would hide a wrong --out or a lost folder.
            raise CheckpointError(
                f"nothing to resume: '{checkpoint_dir}' holds no stage checkpoint"
                if checkpoint_dir is not None else "nothing to resume: no output folder given",
                hint="run without --resume to start training from the beginning")
        # A later stage with no checkpoint yet (killed before its first) starts over.
        restored = restore_stage(checkpoint_dir, run.index, run.flow, run.optimizer, energy,
                                 config.device, run.identity, config.steps, run.extra)
        if restored is not None:
            step, record = restored
            try:
                run.log = StageLog.from_dict(record)
            except (TypeError, ValueError, KeyError):
                raise CheckpointError(
                    f"{checkpoints.paths(checkpoint_dir, run.index)[0]}: field 'log' does not "
                    "describe a stage's training", hint=checkpoints._HINT) from None
            return step
    log.images += restore_images
    if energy.has_constraints:
        grid = energy.lambda_grid
        # A slider stage's grid is never refitted on the flow's samples, so its one pool is
        # larger: λ's Monte Carlo error, not the interpolation, dominates (docs/sliders.md).
        pool = config.moment_samples * (GRID_POOL_FACTOR if grid is not None else 1)
        images = pool if grid is None else grid_fit_images(target, pool)
        where = f" at {len(grid.values)} slider settings" if grid is not None else ""
        with prog.phase(f"stage {run.index}: fitting λ on {images:,} base "
                        f"samples{where}") as phase:
            seeds = step_generator(config.seed, run.index, -1)
            fit = fit_constraints(target, pool, config, seeds, run.group,
                                  use_flow=False) if grid is None else \
                fit_lambda_grid(target, pool, config, seeds, run.group)
            phase.note(ess=round(fit.ess), max_error=fit.max_error)
        log.images += images
        run.record_fit(fit, 0, run_log)
        warn_low_ess(fit, run.index, log.warnings, "base samples", refitted=grid is None)
    # The starts judge one pool of base samples: a base that moves with the setting (a
    # stage after a slider stage) has none that serves every setting, so it starts at the
    # identity.
    if config.warm_start_samples and energy.sliders and not target.conditional_base and \
            len(energy.sliders) == len(energy.context):
        with prog.phase(f"stage {run.index}: mass-covering start on "
                        f"{config.warm_start_samples:,} base samples over the sliders' "
                        "ranges") as phase:
            seeds = step_generator(config.seed, run.index, -2 * 10**6)
            log.warm_start = slider_warm_start(
                target, config, step_generator(config.seed, run.index, -10**6), run.group,
                # Each chain from the pool at its first rows' setting.
                on_pool=lambda pool, log_weights: objective.seed_chains(
                    pool.z, config.temper * pool.fixed, pool.phi.float(),
                    log_weights(objective.step_settings(0, seeds)), seeds,
                    scaled=config.temper * pool.scaled))
            log.images += config.warm_start_samples
            phase.note(**{k: v for k, v in log.warm_start.items()
                          if k in ("min_ess", "steps", "nll_last") and v is not None})
    elif config.warm_start_samples and not energy.is_conditional:
        with prog.phase(f"stage {run.index}: mass-covering start on "
                        f"{config.warm_start_samples:,} base samples") as phase:
            seeds = step_generator(config.seed, run.index, -2 * 10**6)
            log.warm_start = warm_start(
                target, config, step_generator(config.seed, run.index, -10**6), run.group,
                on_pool=lambda pool: objective.take_pool(pool.z, pool.pointwise, pool.phi,
                                                         pool.log_w, seeds))
            log.images += config.warm_start_samples
            phase.note(**{k: v for k, v in log.warm_start.items()
                          if k in ("ess", "steps", "nll_last") and v is not None})
    return 0


def _optimise(run: StageRun, loss: torch.Tensor, parts: StepParts, step: int,
              bad_in_a_row: int) -> int:
    """Take the optimizer step if the loss and gradients are finite; return the count of
    non-finite steps in a row (0 after a good step). Too many in a row stop training."""
    config, group = run.config, run.group
    # Every rank must take the same branch, or the gradient all-reduce would hang.
    finite = group.all_true(bool(torch.isfinite(loss)), config.device)
    if finite:
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in run.optimizer.param_groups for p in g["params"]]
        finite = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, config.grad_clip)))
    if not finite:
        run.optimizer.zero_grad(set_to_none=True)
        run.log.skipped_steps += 1
        if bad_in_a_row + 1 >= config.max_bad_steps:
            raise TrainingError(
                f"stage {run.index}: the loss was not finite for {bad_in_a_row + 1} steps in a "
                f"row (at step {step}); the term that produced it: "
                f"{_non_finite_term(parts, run.target.base)}",
                hint="lower --lr, or reduce the weight of that term")
        return bad_in_a_row + 1
    for group_ in run.optimizer.param_groups:
        group_["lr"] = learning_rate(config, step)
    run.optimizer.step()
    return 0


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
    run = build_stage(base, energy, config, index, source, group)
    objective = StageObjective(run.target, config, index, group)
    run.extra = objective.state()
    start = prepare_stage(run, objective, checkpoint_dir, resume, prog, run_log)
    stepped = _distributed(objective, group, config.device)
    # Images one step decodes: its flow samples (both contexts of a paired energy), all
    # back-propagated through, and the forward term's defensive base samples.
    flow_images = config.batch * (2 if energy.paired else 1)
    log, bad_in_a_row = run.log, 0
    began = time.perf_counter() - log.seconds
    with prog.task(f"stage {index}: training", total=config.steps, start=start) as bar:
        for step in range(start, config.steps):
            loss, parts = stepped(step)
            log.images += flow_images + objective.defensive
            log.images_backward += flow_images
            bad_in_a_row = _optimise(run, loss, parts, step, bad_in_a_row)
            if bad_in_a_row:
                continue
            value = float(loss.detach())
            log.loss.append(round(value, 5))
            log.steps = step + 1
            figures = _running_figures(parts.energies, energy, parts.features)
            if run_log is not None:
                run_log.step(stage=index, step=step + 1, loss=value,
                             parts=_term_means(parts.energies), figures=figures,
                             lr=learning_rate(config, step), images=log.images,
                             estimator=parts.losses)
            _refit_if_due(run, step, prog, run_log)
            log.seconds = time.perf_counter() - began
            if (step + 1) % config.checkpoint_every == 0:
                run.save(checkpoint_dir, step + 1)
            bar.update(step + 1, loss=value, **figures)
            if on_step is not None:
                on_step(StepInfo(index, step + 1, config.steps, log.images,
                                 log.images_backward, log.seconds, value, run.sampler()))
    log.seconds = time.perf_counter() - began
    if start < config.steps:
        # A finished stage is checkpointed too, so that --resume never trains it again.
        run.save(checkpoint_dir, config.steps)
    run.flow.eval()
    _measure_closeness(run, prog, run_log)
    return run.sampler(), log


def _distributed(objective: StageObjective, group: Group, device: str) -> nn.Module:
    """The objective, wrapped for DistributedDataParallel under torchrun."""
    if not group.active:
        return objective
    from torch.nn.parallel import DistributedDataParallel

    # Wrapping copies rank 0's parameters to every rank (after any warm start).
    return DistributedDataParallel(objective, device_ids=[torch.device(device).index]
                                   if device.startswith("cuda") else None)


def _refit_if_due(run: StageRun, step: int, prog: Progress, run_log: RunLog | None) -> None:
    """Refit λ on the flow's own samples every ``refit_every`` steps (not after the last)."""
    config = run.config
    due = bool(config.refit_every) and (step + 1) % config.refit_every == 0
    if not run.energy.has_constraints or not due or step + 1 >= config.steps:
        return
    if run.energy.lambda_grid is not None:
        # A slider stage: the grid's exact fit stays; its training offset follows what the
        # flow's samples show at each setting.
        with prog.phase(f"stage {run.index}: feedback at {len(run.energy.lambda_grid.values)} "
                        "slider settings") as phase:
            images, worst = refit_grid_offsets(
                run.target, config, step_generator(config.seed, run.index, -(step + 2)))
            phase.note(max_error=round(worst, 4))
        run.log.images += images
        if run_log is not None:
            run_log.write("grid_feedback", stage=run.index, step=step + 1, images=images,
                          max_moment_error=round(worst, 5))
        return
    with prog.phase(f"stage {run.index}: refitting λ on {config.refit_samples:,} flow "
                    "samples") as phase:
        fit = fit_constraints(run.target, config.refit_samples, config,
                              step_generator(config.seed, run.index, -(step + 2)), run.group,
                              use_flow=True)
        phase.note(ess=round(fit.ess), max_error=fit.max_error)
    run.log.images += config.refit_samples
    run.record_fit(fit, step + 1, run_log)


def _measure_closeness(run: StageRun, prog: Progress, run_log: RunLog | None) -> None:
    """ESS/N and KL̂ of the trained flow against the stage's exact target, on its own samples
    (measurement: not counted in the stage's training images)."""
    n = run.config.closeness_samples
    energy = run.energy
    sliders_only = energy.is_conditional and len(energy.sliders) == len(energy.context)
    if not n or (energy.is_conditional and not sliders_only) or not run.group.is_main:
        return
    seeds = step_generator(run.config.seed, run.index, -3 * 10**6)
    with prog.phase(f"stage {run.index}: closeness to the exact target on {n:,} samples") \
            as phase:
        if sliders_only:
            figures = _closeness_over_settings(run, n, seeds)
        else:
            figures = closeness(run.target.log_weights(n, seeds, batch=run.config.batch * 4))
        phase.note(ess_fraction=figures["ess_fraction"], kl=figures["kl"])
    run.log.closeness = figures
    if figures["ess_fraction"] < LOW_CLOSENESS:
        run.log.warnings.append(
            f"stage {run.index}: ESS/N is {figures['ess_fraction']:.3f} (KL̂ {figures['kl']:.3f}):"
            " samples differ from the exact target; `--sampler flow+sir` corrects them")
    if run_log is not None:
        run_log.write("closeness", stage=run.index, step=run.config.steps, **figures)


#: Settings per slider at which a slider stage's closeness is measured (ends and middle).
CLOSENESS_POINTS = 3


def _closeness_over_settings(run: StageRun, n: int, seeds: torch.Generator) -> dict[str, Any]:
    """Closeness at a grid of slider settings (``n`` samples each); the headline figures are
    the worst setting's (lowest ESS/N, highest KL̂), each setting's are listed."""
    from energyql.energies.sliders import settings_grid

    params = run.energy.context
    settings: list[dict[str, Any]] = []
    for row in settings_grid(params, CLOSENESS_POINTS).tolist():
        figures = closeness(run.target.log_weights(
            n, seeds, batch=run.config.batch * 4, context=torch.tensor(row)))
        settings.append({"setting": {p.name: round(v, 6) for p, v in zip(params, row)},
                         **figures})
    return {"ess_fraction": min(s["ess_fraction"] for s in settings),
            "kl": max(s["kl"] for s in settings), "samples": n, "at": "the worst setting",
            "settings": settings}


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
        if constraint.grid is not None:
            continue  # its target differs from row to row (a slider moves it)
        with torch.no_grad():
            phi = constraint.phi(features)
            shares = torch.bincount(phi.argmax(1), minlength=phi.shape[1]).float() / len(phi)
            target = constraint.target.clamp(min=1e-12)
            kl = (shares * (shares.clamp(min=1e-12) / target).log()).sum()
        figures[f"KL {' x '.join(constraint.attrs)}"] = float(kl)
    return figures


def _non_finite_term(parts: StepParts, base: Generator) -> str:
    for text, value in parts.energies.items():
        if not torch.isfinite(value).all():
            return f"'{text}'"
    if not torch.isfinite(parts.logdet).all():
        return "the flow's log-determinant"
    if not torch.isfinite(base.log_prior(parts.z)).all():
        return "the latent prior"
    return "the gradients (every term was finite)"
