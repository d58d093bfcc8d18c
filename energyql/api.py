"""``energyql.train``: the one training entry point, shared by Python and ``energyql run``.

It applies the generator's default settings (:func:`energyql.workflow.defaults_for`), takes
settings as keyword arguments (``steps=10``), refuses unknown ones, and with ``report=True``
writes the same grids, metrics, curves and report as the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from energyql.errors import UsageError
from energyql.generators.registry import DEFAULT_GENERATOR

if TYPE_CHECKING:  # torch-backed types, for the signature only
    from energyql.generators.base import Generator
    from energyql.lang.graph import Program
    from energyql.progress import Progress
    from energyql.sampler import Artifact
    from energyql.training import StepInfo, TrainConfig


def train(program: str | Program, gen: str | Generator | None = None, *,
          out: str | Path | None = None, report: bool = False,
          config: TrainConfig | None = None, start: Artifact | str | Path | None = None,
          resume: bool = False, progress: bool | Progress = True, samples: int = 2000,
          grid: int = 64, generator_options: dict[str, Any] | None = None,
          keep_checkpoints: bool = False, on_step: Callable[[StepInfo], None] | None = None,
          clip: str | None = None, face_attributes: str | None = None,
          **settings: Any) -> Artifact:
    """Train every stage of ``program``; return the controlled sampler as an Artifact.

    Arguments:
        program: a source string or a compiled :class:`energyql.Program`.
        gen: a generator name, ``scheme:PATH`` or Generator (default: the ``start``
            artifact's generator, else :data:`~energyql.generators.registry.DEFAULT_GENERATOR`).
        out: folder for the artifact, checkpoints and ``log.jsonl``; needed to resume and for
            the report.
        report: also evaluate and write ``samples.png``, ``base.png``, ``stage<k>.png``,
            ``metrics.json``, ``curves.png``, ``report.md`` and ``report.html`` into ``out``
            (the evaluation figures end up in ``artifact.manifest.metrics``).
        config: a full :class:`energyql.TrainConfig`; default: the generator's defaults.
        start: an Artifact, or an artifact folder, whose stages come first (``--from``).
        resume: continue from the checkpoints in ``out``.
        keep_checkpoints: keep the stage checkpoints (with their optimizer state) in ``out``
            after a successful run; by default they are deleted, the artifact is whole.
        progress: show progress on stderr (bool, or a :class:`energyql.progress.Progress`).
        samples: samples judged by the report's evaluation.
        grid: noises drawn in the report's grids.
        generator_options: options for the generator's loader (e.g. ``{"truncation": 0.7}``).
        on_step: called after every training step with a :class:`energyql.training.StepInfo`
            (step, images decoded so far, the stage's sampler as trained so far).
        clip: the CLIP spec behind ``clip(...)`` terms that name none and zero-shot attributes
            (``--clip``; default ``$ENERGYQL_CLIP``, else the world's); in the manifest.
        face_attributes: the faces world's attribute backend: ``auto``, ``clip``, ``fairface``
            or ``fairface:PATH`` (``--face-attributes``; default ``$ENERGYQL_FACE_ATTRIBUTES``).
        **settings: any :class:`energyql.TrainConfig` field, e.g. ``steps=10``, ``seed=1``,
            ``device="cuda"``, ``threads=1``; applied over ``config`` or the defaults.

    Example:
        >>> art = energyql.train("color == red", gen="shapes", steps=10)   # doctest: +SKIP
        >>> images = art.sample(16, seed=0)                                 # doctest: +SKIP
    """
    from energyql.options import MAX_SAMPLES, MIN_REPORT_SAMPLES
    from energyql.sampler import Artifact, load, read_manifest
    from energyql.workflow import run_and_report, train_config

    _check_count("samples", samples, MIN_REPORT_SAMPLES, MAX_SAMPLES)
    _check_count("grid", grid, 1, 1024)
    if report and out is None:
        raise UsageError("report=True needs an output folder",
                         hint="pass out='runs/NAME' to write the report there")
    if generator_options and gen is not None and not isinstance(gen, str):
        raise UsageError("generator_options apply to a generator given by name",
                         hint="configure the Generator object itself, or pass its name")
    if gen is None:
        gen = DEFAULT_GENERATOR if start is None else start.manifest.generator.id \
            if isinstance(start, Artifact) else read_manifest(start).generator.id
    if start is not None and isinstance(gen, str):
        trained_on = start.manifest.generator.id if isinstance(start, Artifact) \
            else read_manifest(start).generator.id
        if gen != trained_on:
            raise UsageError(f"start= was trained on '{trained_on}', not '{gen}'",
                             hint="leave gen= out: stages added to an artifact run on its "
                                  "generator")
    config = train_config(gen, config, **settings)
    if start is not None and out is not None and not isinstance(start, Artifact) \
            and _same_folder(Path(out), Path(start)):
        # The new artifact would replace the one it extends: the base would be lost.
        raise UsageError(f"out='{out}' is the start= artifact; writing there would replace it",
                         hint="give the extended artifact a folder of its own")
    if start is not None and not isinstance(start, Artifact):
        # A name is the artifact's own generator (checked above): loading without it rebuilds
        # that generator with the options its manifest records (a prompt), and these over them.
        start = load(start, gen=None if isinstance(gen, str) else gen, device=config.device,
                     **(generator_options or {}))
    if start is not None and isinstance(program, str):
        # Stages added to an artifact: a leading 'then' is optional.
        program = re.sub(r"^\s*\|?\s*then\b", "", program, count=1)
    result = run_and_report(program, gen=gen, out=out, config=config, report=report,
                            resume=resume, start=start, progress=progress, samples=samples,
                            grid=grid, generator_options=generator_options, on_step=on_step,
                            clip=clip, face_attributes=face_attributes,
                            keep_checkpoints=keep_checkpoints)
    return result.artifact


def _same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name one folder (False when either cannot be looked at)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _check_count(name: str, value: Any, low: int, high: int) -> None:
    """Refuse a count outside ``low..high`` before anything trains (UsageError)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{name}={value!r} must be a whole number from {low} to {high:,}",
                         hint=f"e.g. {name}={max(low, min(high, 64))}")


__all__ = ["train"]
