"""``energyql run EXPR --gen NAME``: train every stage, write the artifact and a report."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from energyql.cli.app import (
    ArtifactOutOption,
    BatchOption,
    ChainWeightOption,
    ClipOption,
    CouplingOption,
    DefensiveOption,
    DeviceOption,
    FaceAttributesOption,
    ForwardWeightOption,
    LearningRateOption,
    MomentSamplesOption,
    ReplayWeightOption,
    ReportSamplesOption,
    ScoreShareOption,
    SeedOption,
    StepsOption,
    TemperOption,
    ThreadsOption,
    TruncationOption,
    WarmStartOption,
    app,
    guarded,
    idle_threads,
    new_folder,
    stdout,
)
from energyql.errors import EnergyQLError, UsageError
from energyql.generators.registry import DEFAULT_GENERATOR


def gen_options(pairs: list[str], truncation: float | None,
                gen: str | None = None, preset: str | None = None) -> dict[str, Any]:
    """The generator's load options from ``--gen-option`` pairs and ``--truncation``: only
    those a manifest may record (a path never travels this way), each checked against the
    declaration of ``gen``'s family (:mod:`energyql.generators.options`): a usage error.
    ``preset`` (``@name``) adds the preset's own options (a prompt), which the pairs may not
    change."""
    from energyql.errors import EnergyQLError
    from energyql.generators.options import check_options, family_of
    from energyql.generators.registry import resolve
    from energyql.options import parse_key_values

    options = parse_key_values(pairs, what="generator option",
                               example="--gen-option steps=25")
    if truncation is not None:
        if "truncation" in options:
            raise UsageError("truncation is given twice (--truncation and --gen-option)",
                             hint="give it once")
        options["truncation"] = truncation
    if preset is not None:
        from energyql.presets import merge_options

        options = merge_options(preset, options)
    try:
        spec = resolve(gen) if gen is not None else None
    except EnergyQLError:
        spec = None
    family = family_of(spec.loader) if spec is not None else None
    return check_options(family, options, recorded_only=True, where=gen or "",
                         own=spec.options if spec is not None else ())


def check_start_generator(gen: str | None, start: Path) -> str:
    """Return the generator of the artifact ``start``; an explicit ``gen`` must be that one.

    Stages added with ``--from`` run on the artifact's generator: a ``--gen`` naming another
    would be ignored, so it is refused (a usage error) as an ``@preset``'s other generator is.
    """
    from energyql.generators.registry import resolve
    from energyql.sampler import read_manifest

    trained_on = read_manifest(start).generator.id
    if gen is not None and gen != trained_on:
        try:
            same = resolve(gen).name == resolve(trained_on).name
        except EnergyQLError:
            same = False
        if not same:
            raise UsageError(f"--from '{start}' was trained on '{trained_on}', not '{gen}'",
                             hint=f"drop --gen (stages added with --from run on the artifact's "
                                  f"generator), or train a new run on {gen} without --from")
    return trained_on


def default_out(expression: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", expression.lower()).strip("-")[:40] or "run"
    return Path("runs") / f"{slug}-{hashlib.sha1(expression.encode()).hexdigest()[:6]}"


@app.command()
@guarded
def run(
    expression: Annotated[str, typer.Argument(help="The energyql expression to train.")],
    gen: Annotated[Optional[str], typer.Option(
        "--gen", "-g", help=f"Generator name or scheme:PATH (default: {DEFAULT_GENERATOR}, or "
                            "the @preset's).")] = None,
    out: ArtifactOutOption = None,
    steps: StepsOption = None,
    batch: BatchOption = None,
    lr: LearningRateOption = None,
    warm_start: WarmStartOption = None,
    moment_samples: MomentSamplesOption = None,
    forward_weight: ForwardWeightOption = None,
    defensive: DefensiveOption = None,
    score_share: ScoreShareOption = None,
    chain_weight: ChainWeightOption = None,
    replay_weight: ReplayWeightOption = None,
    coupling: CouplingOption = None,
    temper: TemperOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    amp: Annotated[bool, typer.Option(
        help="bf16 mixed precision for the control models (GPU only).")] = False,
    threads: ThreadsOption = None,
    truncation: TruncationOption = None,
    gen_option: Annotated[Optional[list[str]], typer.Option(
        "--gen-option", help="Generator option KEY=VALUE (repeatable): steps=K (diffusion), "
                             "prompt=TEXT, negative_prompt=TEXT, guidance=G (text-to-image), "
                             "class_name=NAME (BigGAN), noise=fixed|random (StyleGAN2), "
                             "prompt=TEXT (portraits: one of its designed prompts).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoints in --out.")] = False,
    start_from: Annotated[Optional[Path], typer.Option(
        "--from", help="Add stages to this artifact.")] = None,
    samples: ReportSamplesOption = 2000,
    progress: Annotated[bool, typer.Option(
        help="Show progress on stderr (a bar on a terminal, timestamped lines otherwise).")] = True,
    clip: ClipOption = None,
    face_attributes: FaceAttributesOption = None,
    keep_checkpoints: Annotated[bool, typer.Option(
        "--keep-checkpoints", help="Keep the stage checkpoints (and optimizer state) in --out "
                                   "after a successful run.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Write into a non-empty --out that is not an energyql artifact.")] = False,
) -> None:
    """Train a controlled sampler for EXPRESSION and write artifact, grids, metrics and report."""
    from energyql.lang.api import compile as compile_program
    from energyql.presets import expand, is_reference

    preset = expression if is_reference(expression) else None
    expression, gen = expand(expression, gen)  # '@name': a paper preset and its generator
    explicit = gen  # given with --gen, or the @preset's: None when neither
    gen = gen or DEFAULT_GENERATOR
    if start_from is not None:
        # Stages added to an artifact run on its generator (an explicit --gen or a preset's
        # must be that one); 'then' before them is optional.
        gen = check_start_generator(explicit, start_from)
        expression = re.sub(r"^\s*\|?\s*then\b", "", expression, count=1)
    # Check the options and the expression before anything heavy is imported or loaded.
    options = gen_options(gen_option or [], truncation, gen, preset)
    program = compile_program(expression, gen=gen)
    from energyql.api import train

    folder = out or default_out(expression)
    new_folder(folder)
    from energyql.api import _same_folder

    if start_from is not None and _same_folder(folder, start_from):
        # The new artifact would replace the one it extends: the base would be lost.
        raise UsageError(f"--out '{folder}' is the --from artifact; writing there would "
                         "replace it", hint="give the extended artifact a folder of its own")
    given = dict(steps=steps, batch=batch, lr=lr, warm_start_samples=warm_start,
                 moment_samples=moment_samples,
                 forward_weight=forward_weight, defensive=defensive,
                 score_share=score_share, chain_weight=chain_weight,
                 replay_weight=replay_weight, coupling=coupling, temper=temper,
                 threads=threads or idle_threads())
    settings: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    from energyql.outdir import claim

    # Checked and locked before the first step (only the first torchrun process writes).
    with claim(folder, force=force, enabled=os.environ.get("RANK", "0") == "0"):
        artifact = train(program, gen=gen, out=folder, report=True, start=start_from,
                         resume=resume, progress=progress, samples=samples,
                         generator_options=options, seed=seed, device=device, amp=amp,
                         keep_checkpoints=keep_checkpoints, clip=clip,
                         face_attributes=face_attributes, **settings)
    from energyql.distributed import current as current_group

    if current_group().is_main:
        from energyql.workflow import RUN_FILES, metrics_table

        stdout.print(metrics_table(dict(artifact.manifest.metrics)))
        written = [name for name in RUN_FILES if (folder / name).exists()]
        stdout.print(f"wrote {folder}/: " + ", ".join(written), markup=False)
