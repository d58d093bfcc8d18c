"""The whole ``energyql run`` job: train, evaluate, write grids, curves and the report.

Also :func:`defaults_for`, the training defaults a generator's spec and world give a run, and
:func:`train_config`, those defaults with a caller's settings on top (checked by name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from energyql.errors import EnergyQLError, EvaluationError, UsageError, check_choice
from energyql.generators.registry import DEFAULT_GENERATOR
from energyql.io import write_json
from energyql.manifest import MAX_BLOCKS, MAX_FREQUENCIES, MAX_WIDTH, Manifest
from energyql.metrics import RunMetrics
from energyql.options import (
    COUPLING_CHOICES,
    MAX_BATCH,
    MAX_LOSS_WEIGHT,
    MAX_SAMPLES,
    MAX_STEPS,
    MAX_TEMPER,
    MAX_THREADS,
)


def defaults_for(gen) -> dict:
    """Return the training defaults for a generator (name, ``scheme:PATH`` or Generator).

    They live with the generator's spec (:meth:`GeneratorSpec.training_defaults`) and its
    world's catalog (``clip_copies`` from the world's CLIP settings).
    """
    from energyql.catalog import CATALOGS
    from energyql.errors import UnknownGeneratorError
    from energyql.generators.registry import GeneratorSpec, resolve

    name = gen if isinstance(gen, str) else getattr(gen, "id", "")
    try:
        spec = resolve(name)
    except UnknownGeneratorError:  # a Generator object of the user's own
        world = getattr(gen, "catalog", "generic")
        spec = GeneratorSpec(name, world if isinstance(world, str) else world.name, "")
    catalog = CATALOGS.get(spec.catalog, CATALOGS["generic"])
    return {**spec.training_defaults(), "clip_copies": catalog.clip.copies}


@dataclass
class RunResult:
    """What ``energyql run`` produced: the output folder, the eval figures and the manifest."""

    out: Path | None
    metrics: dict
    manifest: Manifest
    artifact: Any = None

    def files(self) -> list[str]:
        """Return the names of the run's files that exist, the report first."""
        if self.out is None:
            return []
        return [name for name in RUN_FILES if (self.out / name).exists()]

    def summary_table(self):
        return metrics_table(self.metrics)


def metrics_table(metrics: RunMetrics | Mapping[str, Any]):
    """Return a rich table of the headline figures (the report's rows, controlled vs base),
    then each attribute's distribution."""
    from rich.table import Table
    from rich.text import Text

    from energyql.report import headline_rows

    metrics = RunMetrics.of(metrics)
    header, *rows = headline_rows(metrics)  # user text in them is shown as is, not as markup
    table = Table(title=f"evaluation on {metrics.samples} samples")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    base_attributes = metrics.base.attributes if metrics.base is not None else {}
    for attribute, shares in metrics.attributes.items():
        base_shares = base_attributes.get(attribute, {})
        table.add_row(attribute,
                      " ".join(f"{v}={s:.2f}" for v, s in base_shares.items()),
                      " ".join(f"{v}={s:.2f}" for v, s in shares.items()))
    return table


def train_config(gen, config=None, **settings):
    """Return the TrainConfig of a run: ``config`` (default: ``TrainConfig`` with the
    generator's defaults from :func:`defaults_for`) with ``settings`` on top.

    Every setting must name a ``TrainConfig`` field; a value of the wrong kind or out of range
    is refused too (a :class:`~energyql.errors.UsageError` before anything is loaded).
    """
    from dataclasses import fields

    from energyql.training import TrainConfig

    kinds = {f.name: f.type for f in fields(TrainConfig)}
    for name, value in settings.items():
        check_choice(name, kinds, what="training setting")
        _check_setting(name, value)
    if config is None:
        config = TrainConfig(**{k: v for k, v in defaults_for(gen).items() if k in kinds})
    elif not isinstance(config, TrainConfig):
        raise UsageError(f"config must be an energyql.TrainConfig, not {type(config).__name__}",
                         hint="e.g. config=energyql.TrainConfig(steps=100), or steps=100")
    config = replace(config, **settings)
    # A TrainConfig built by hand is checked like keyword settings (temper=-1 or a NaN
    # weight would otherwise train, or skip every step, without a word).
    for field in fields(TrainConfig):
        if field.name not in settings:
            _check_setting(field.name, getattr(config, field.name))
    return config


# Settings that must be whole numbers of at least this much (the rest are checked by kind).
_AT_LEAST = {"steps": 1, "batch": 1, "blocks": 1, "width": 1, "clip_copies": 1,
             "closeness_samples": 0,
             "moment_samples": 1, "refit_every": 0, "refit_samples": 1, "warm_start_samples": 0,
             "warm_start_steps": 0, "checkpoint_every": 1, "max_bad_steps": 1, "seed": 0,
             "threads": 1, "slider_frequencies": 0, "replay_rows": 0, "replay_capacity": 0}
# ... and at most this much: bounds on what a typo can ask to allocate or to run.
_AT_MOST = {"steps": MAX_STEPS, "batch": MAX_BATCH, "moment_samples": MAX_SAMPLES,
            "refit_samples": MAX_SAMPLES, "warm_start_samples": MAX_SAMPLES,
            "warm_start_steps": MAX_STEPS, "clip_copies": 1024, "threads": MAX_THREADS,
            "seed": 2**63 - 1, "blocks": MAX_BLOCKS, "width": MAX_WIDTH,
            "closeness_samples": MAX_SAMPLES, "slider_frequencies": MAX_FREQUENCIES,
            "replay_rows": MAX_BATCH, "replay_capacity": MAX_SAMPLES}
# Settings whose None means "chosen for you" (threads: the idle cores; the flow's size: sized
# to the generator's latent).
_MAY_BE_NONE = ("threads", "blocks", "width")
_POSITIVE = ("lr", "grad_clip", "temper")
_NON_NEGATIVE = ("final_lr_fraction", "weight_decay", "forward_weight", "chain_weight",
                 "feedback_gain", "replay_weight")
# Shares: numbers from 0 to at most this much.
_SHARES = {"score_share": 1.0, "smooth_score_share": 1.0, "defensive": 0.9}
# Numbers with a ceiling (the CLI's too): past it the loss overflows and no step counts.
_NUMBER_AT_MOST = {"temper": MAX_TEMPER, "forward_weight": MAX_LOSS_WEIGHT,
                   "chain_weight": MAX_LOSS_WEIGHT, "replay_weight": MAX_LOSS_WEIGHT}


def _check_setting(name: str, value) -> None:
    """Refuse a training setting's value of the wrong kind or range (UsageError)."""
    import math

    def refuse(rule: str):
        raise UsageError(f"training setting {name}={value!r} {rule}",
                         hint="energyql.TrainConfig lists every setting with its default")

    if name in _AT_LEAST:
        if value is None and name in _MAY_BE_NONE:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            refuse(f"must be a whole number of at least {_AT_LEAST[name]}")
        if value < _AT_LEAST[name]:
            refuse(f"must be at least {_AT_LEAST[name]}")
        if name in _AT_MOST and value > _AT_MOST[name]:
            refuse(f"must be at most {_AT_MOST[name]:,}")
    elif name in _SHARES:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not 0 <= value <= _SHARES[name]:
            refuse(f"must be a number from 0 to {_SHARES[name]:g}")
    elif name in _POSITIVE or name in _NON_NEGATIVE:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            refuse("must be a finite number")
        if value < 0 or (name in _POSITIVE and value == 0):
            refuse("must be greater than 0" if name in _POSITIVE else "must be at least 0")
        if name in _NUMBER_AT_MOST and value > _NUMBER_AT_MOST[name]:
            refuse(f"must be at most {_NUMBER_AT_MOST[name]:g}")
    elif name == "amp" and not isinstance(value, bool):
        refuse("must be True or False")
    elif name == "coupling" and value not in COUPLING_CHOICES:
        refuse(f"must be one of {', '.join(COUPLING_CHOICES)}")
    elif name == "device" and not isinstance(value, str):
        refuse("must be a device name such as 'cpu' or 'cuda:0'")


def run_and_report(program, *, gen=DEFAULT_GENERATOR, out: str | Path | None = None, config=None,
                   report: bool = True, resume: bool = False, start=None,
                   progress=True, samples: int = 2000, grid: int = 64,
                   generator_options: dict | None = None, on_step=None,
                   clip: str | None = None, face_attributes: str | None = None,
                   keep_checkpoints: bool = False) -> RunResult:
    """Train ``program`` (the job behind ``energyql.train`` and ``energyql run``): the one
    owner of a run's folder.

    Training writes checkpoints and ``log.jsonl`` into ``out``; the artifact is saved once.
    Without ``report`` that is as soon as training ends. With ``report`` (needs ``out``) the
    run is evaluated on ``samples`` samples first, and the artifact saved with its metrics
    before the grids (``base.png``, ``stage<k>.png``, ``samples.png``), ``metrics.json``,
    ``curves.png``, ``report.md`` and ``report.html`` are written beside it; an evaluation that
    fails or is interrupted still saves the artifact (without what it did not measure). Once
    all of that succeeded the stage checkpoints are deleted (``keep_checkpoints`` keeps them;
    until then ``--resume`` rebuilds a finished run without training it again). Every phase
    shows progress on stderr. ``clip`` and ``face_attributes`` choose the judges of training
    and evaluation alike.
    """
    import torch

    from energyql.distributed import current as current_group
    from energyql.distributed import device_for
    from energyql.evaluation import evaluate
    from energyql.progress import Progress
    from energyql.training import train_program

    group = current_group()
    prog = progress if isinstance(progress, Progress) else \
        Progress(enabled=bool(progress) and group.is_main)
    config = replace(config, device=device_for(config.device, group))
    out = Path(out) if out is not None else None
    reporting = report and out is not None
    artifact = train_program(program, gen, config, out=out, resume=resume, start=start,
                             progress=prog, on_step=on_step, clip=clip,
                             face_attributes=face_attributes, save=not reporting,
                             **(generator_options or {}))
    if not reporting:
        _remove_checkpoints(out, keep_checkpoints)
        return RunResult(out, {}, artifact.manifest, artifact)
    assert out is not None  # reporting
    sampler = artifact.sampler.eval()
    # From here on a failure must not lose the training: what was measured before it is
    # still written (the artifact, grids, metrics, report), then the error is raised.
    metrics: dict = {}
    previous = None
    failure: EnergyQLError | None = None
    try:
        # Evaluation is sharded over ranks under torchrun; files are written by rank 0 only.
        with prog.phase(f"evaluating on {samples:,} samples (and {4 * samples:,} base samples)"):
            metrics = evaluate(artifact, samples=samples, seed=config.seed, device=config.device,
                               clip=clip, face_attributes=face_attributes)
        if artifact.sliders:
            # Requested against achieved along each slider (the figures above are at the
            # sliders' middles).
            from energyql.evaluation import slider_sweep

            count = min(samples, SWEEP_SAMPLES)
            with prog.phase(f"measuring each slider at 5 settings on {count:,} samples each"):
                metrics["sliders"] = slider_sweep(artifact, samples=count, seed=config.seed,
                                                  device=config.device, clip=clip,
                                                  face_attributes=face_attributes)
        if group.is_main and _has_world_features(artifact):
            # Sample quality and mode collapse, not only shares: the distance to exact-target
            # samples in the world judge's feature space (embedded worlds only).
            from energyql.frechet import world_frechet

            count = min(samples, FRECHET_SAMPLES)
            with prog.phase(f"Fréchet distance to the exact target on {count:,} samples"):
                metrics["frechet"] = world_frechet(artifact, samples=count, seed=config.seed,
                                                   device=config.device, reference="flow+sir")
        if len(sampler.stages) > 1:
            # The stage before, judged against the whole program, so that the report can set
            # the last stage beside it (what the `then` changed), not only beside the base.
            with prog.phase(f"evaluating stage {sampler.index - 1} on {samples:,} samples"):
                previous = evaluate(sampler.base, program=artifact.manifest.canonical,
                                    samples=samples, seed=config.seed, device=config.device,
                                    clip=clip, face_attributes=face_attributes)
    except EnergyQLError as error:
        failure = error
        metrics["evaluation_error"] = error.message
    except BaseException:  # interrupted (Ctrl-C) or a bug: keep the trained artifact
        if group.is_main:
            artifact.save(out)
        raise
    if group.is_main:
        noise = torch.randn(grid, sampler.latent_dim,
                            generator=torch.Generator().manual_seed(config.seed))
        _write_files(out, artifact, metrics, noise, prog, previous)
    group.barrier()
    if failure is not None:
        raise EvaluationError(
            f"training finished and the artifact is saved in '{out}', but its evaluation "
            f"failed: {failure.message}",
            hint=f"measure it again with: energyql eval {out}"
                 + (f" ({failure.hint})" if failure.hint else "")) from None
    _remove_checkpoints(out, keep_checkpoints)
    return RunResult(out, metrics, artifact.manifest, artifact)


def _remove_checkpoints(out: Path | None, keep: bool) -> None:
    """Delete a finished run's stage checkpoints (the artifact is whole; their optimizer state
    is not needed), on rank 0."""
    from energyql import checkpoints
    from energyql.distributed import current as current_group

    if out is not None and not keep and current_group().is_main:
        checkpoints.remove_all(out)


FRECHET_SAMPLES = 1000
#: Samples judged at each setting of a slider sweep.
SWEEP_SAMPLES = 500


def _has_world_features(artifact: Any) -> bool:
    """True for unconditional artifacts of a world whose judge gives features."""
    from energyql.frechet import world_feature_worlds

    sampler = artifact.sampler
    return str(sampler.root.catalog) in world_feature_worlds() and not sampler.context_params


def _write_files(out: Path, artifact, metrics: dict, noise, prog,
                 previous: dict | None = None) -> None:
    """Write the grids, metrics, curves and report of a finished run (rank 0).

    ``previous``: the figures of the stage before the last (several stages only).
    """
    import shutil

    import torch

    from energyql.report import save_grid, save_stage_grids, write_report
    from energyql.runlog import CURVES_NAME, LOG_NAME, write_curves
    from energyql.sampler import context_grid

    sampler = artifact.sampler
    stages = sampler.stages
    # The artifact first, with its metrics: a grid or the report failing must not lose it.
    artifact.manifest = artifact.manifest.with_metrics(metrics)
    artifact.save(out)
    with prog.task("grids", total=len(stages) + 2, unit="grid") as task:
        views = save_stage_grids(out, sampler, noise)
        if previous is not None and len(views) > 1:
            before, last = views[-2], views[-1]
            views[-2:] = [replace(before, metrics=previous) if before.index == 1 else before,
                          replace(last, metrics=metrics, previous=previous)]
        task.update(len(stages) + 1)
        scale = 2 if sampler.image_size and sampler.image_size <= 64 else 1
        if sampler.context_params:
            # A conditional sampler: one row per noise, its first parameter swept along it.
            device = next(iter(sampler.flow.parameters())).device
            rows, first = noise[:8].to(device), sampler.context_params[0]
            values = context_grid(first.low, first.high, 8)
            with torch.no_grad():
                sweep = torch.stack([sampler.decode(rows, sampler.context_tensor(
                    {first.name: v}, len(rows)).to(device)) for v in values], 1).flatten(0, 1)
            save_grid(out / "samples.png", sweep, columns=len(values), scale=scale)
        else:
            shutil.copyfile(out / f"stage{sampler.index}.png", out / "samples.png")
        task.update(len(stages) + 2)
    write_json(out / "metrics.json", metrics)
    with prog.phase("writing the report"):
        if (out / LOG_NAME).exists():
            write_curves(out / LOG_NAME, out / CURVES_NAME)
        write_report(out, artifact.manifest, metrics, stages=views)


#: The files a reported run writes beside the artifact, in the order ``energyql run`` lists them.
RUN_FILES = ("report.md", "report.html", "log.jsonl", "curves.png", "metrics.json",
             "samples.png", "base.png", "manifest.json", "flows.safetensors")
