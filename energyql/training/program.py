"""Training a whole program: every stage in turn, each on top of the one before.

:func:`train` compiles and checks the program against the base generator's catalog, lowers
every stage (loading its control models before anything is written), trains the stages with
:func:`energyql.training.loop.train_stage` and assembles the Artifact (saved atomically to
``out``). ``energyql.train`` (the public entry) adds the world's default settings and the
report on top of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from energyql.distributed import current as current_group
from energyql.energies import ControlModels, StageEnergy, lower_stage
from energyql.errors import EnergyQLError
from energyql.generators.base import Generator
from energyql.generators.registry import DEFAULT_GENERATOR
from energyql.manifest import LambdaGridRecord, StageRecord, TrainRecord
from energyql.progress import Progress
from energyql.runlog import LOG_NAME, RunLog
from energyql.sampler import Artifact, StageSampler, manifest_for, stage_record
from energyql.training.config import TrainConfig
from energyql.training.loop import StageLog, StepInfo, train_stage


def controls_record(models: ControlModels) -> dict[str, Any]:
    """Which judges trained the artifact (the CLIP and attribute models of ``models``)."""
    from energyql.controls.attributes import resolve_face_backend

    record: dict[str, Any] = {"clip": models.clip_spec,
                              "attributes": sorted({a.model for a in models.catalog.attributes})}
    if "face-attributes" in record["attributes"]:
        kind, path, _ = resolve_face_backend(models.face_attributes)
        record["face_attributes"] = kind if path is None else f"{kind}:{path}"
    if models.notices:
        record["notices"] = list(models.notices)
    return record


def trained_stage_record(sampler: StageSampler, log: StageLog | None = None,
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
        final_loss=log.loss[-1] if log.loss else None, closeness=log.closeness,
        lambda_grid=LambdaGridRecord(**_grid_fields(energy.lambda_grid))
        if energy.lambda_grid is not None else None)


def _grid_fields(grid: Any) -> dict[str, Any]:
    record = grid.to_record()
    return {"sliders": tuple(record["sliders"]), "points": record["points"],
            "lam": tuple(tuple(row) for row in record["lambda"])}


def train_program(program: Any, gen: str | Generator = DEFAULT_GENERATOR,
                  config: TrainConfig | None = None, *, out: str | Path | None = None,
                  resume: bool = False, start: Artifact | None = None,
                  progress: bool | Progress = True,
                  on_step: Callable[[StepInfo], None] | None = None,
                  clip: str | None = None, face_attributes: str | None = None,
                  save: bool = True, **generator_options: Any) -> Artifact:
    """Train every stage of a program; return the controlled sampler as an Artifact.

    Arguments:
        program: a source string or a compiled :class:`energyql.Program`.
        gen: a generator name, ``scheme:PATH`` or a Generator.
        config: training settings (steps, batch, lr, seed, device, ...).
        out: directory for checkpoints and the artifact (written atomically); needed to resume.
        resume: continue from the checkpoints in ``out``.
        start: an existing artifact whose stages come first (``--from``).
        progress: show progress on stderr (a bool, or a shared Progress).
        save: write the artifact into ``out`` (the run's workflow saves it itself, once, with
            its metrics).
        on_step: called after every training step with a :class:`StepInfo`.
        clip, face_attributes: the judges' CLIP spec and face-attribute backend (see
            :class:`~energyql.energies.ControlModels`); recorded in the manifest.

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
    if config.threads:
        torch.set_num_threads(config.threads)
    base: Generator
    if start is not None:
        base = start.sampler
    elif isinstance(gen, Generator):
        base = gen
    else:
        base = load_generator(gen, device=config.device, **generator_options)
    source = program if isinstance(program, str) else str(program)
    program = compile_program(program) if isinstance(program, str) else program
    whole = program.checked(base.catalog)
    stages = list(whole.stages)
    if start is not None:
        # New stages are checked after the artifact's own, so that what they refer to
        # (debias(clip_bias): what the earlier stages asked for and constrained) is the whole
        # program's, exactly as if it had been trained in one go.
        whole = extend(start.manifest.canonical, program).checked(base.catalog)  # graphs
        stages = list(whole.stages)[-len(stages):]
    first = len(whole.stages) - len(stages)
    models = ControlModels(base.catalog, device=config.device, clip_copies=config.clip_copies,
                           clip=clip, face_attributes=face_attributes)
    out = Path(out) if out is not None else None
    # Training on a trained sampler continues its stage numbering (stage k+1 on top of k).
    earlier = base.stages if isinstance(base, StageSampler) else []
    stage_records = list(start.manifest.stages) if start is not None else [
        stage_record(s) for s in earlier]
    # Every stage's energy is built (its control models loaded) before anything is written:
    # missing weights fail the run before it creates files or trains a stage.
    energies = [lower_stage(stage, models, whole.stage_sliders(first + k))
                for k, stage in enumerate(stages)]
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
            stage_records.append(trained_stage_record(sampler, log, config, energy))
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
                            controls=controls_record(models), stages=tuple(stage_records))
    artifact = Artifact(sampler, manifest)
    if out is not None and save and current_group().is_main:
        artifact.save(out)
    current_group().barrier()
    return artifact
