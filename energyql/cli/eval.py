"""``energyql eval (ARTIFACT | --gen NAME) --samples N [--json]``: measure a sampler."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from energyql.cli.app import (
    ClipOption,
    DeviceOption,
    FaceAttributesOption,
    FileOutOption,
    SamplesOption,
    SeedOption,
    ThreadsOption,
    app,
    check_sampler,
    guarded,
    set_threads,
    stdout,
)
from energyql.errors import SamplerError, UsageError


def _evaluate_sampler(name: str, target, program, options: dict, samples: int, seed: int,
                      device: str, clip: str | None, face_attributes: str | None) -> dict:
    """Draw ``samples`` with a baseline or corrected sampler and judge them (with the control
    models' ``clip`` and ``face_attributes``)."""
    from energyql.baselines import sample as draw
    from energyql.baselines import stage_energy
    from energyql.energies import ControlModels
    from energyql.evaluation import evaluate_images
    from energyql.sampler import Artifact, load

    source = load(target, device=device) if isinstance(target, str) else target
    generator = source.sampler if isinstance(source, Artifact) else source
    catalog = generator.catalog
    if isinstance(source, Artifact):
        program = program or source.manifest.canonical
    elif program is None:
        raise UsageError(f"--sampler {name} on a generator needs --expr EXPR (its target)",
                         hint="e.g. --expr 'shape == circle'")
    energy = None
    if name != "flow" or not isinstance(source, Artifact):
        models = ControlModels(catalog, device=device, clip_copies=4, clip=clip,
                               face_attributes=face_attributes)
        energy = stage_energy(source, program if not isinstance(source, Artifact) else None,
                              device=device, models=models)
    result = draw(name, source, energy, n=samples, seed=seed, device=device, **options)
    if result.images is None:
        raise SamplerError(f"the {name} sampler returned latents only, no images")
    figures = evaluate_images(result.images, catalog, program=program, device=device, seed=seed,
                              clip=clip, face_attributes=face_attributes)
    figures["sampler"] = result.stats
    return figures


def _distances(target, frechet: bool, fid: Path | None, samples: int, seed: int, device: str,
               prog) -> dict:
    """The Fréchet figures asked for: world-feature distance and Inception FID."""
    from energyql.frechet import inception_fid, world_frechet
    from energyql.sampler import Artifact, load

    artifact = target if isinstance(target, Artifact) else \
        load(target, device=device) if isinstance(target, str) else None
    out: dict = {}
    if frechet:
        if artifact is None:
            raise UsageError("--frechet measures a trained artifact against its exact target",
                             hint="give an ARTIFACT directory")
        with prog.phase(f"Fréchet distance to the exact target on {samples:,} samples"):
            out["frechet"] = world_frechet(artifact, samples=samples, seed=seed, device=device,
                                           reference="flow+sir")
    if fid is not None:
        sampler = artifact.sampler if artifact is not None else target
        with prog.phase(f"Inception FID on {samples:,} samples"):
            images = sampler.sample(samples, seed=seed)
            out["fid"] = inception_fid(images, fid, device=device)
    return out


def slider_names(artifact: Path) -> list[str]:
    """The sliders of an artifact's last stage, from its manifest alone."""
    from energyql.energies.sliders import SLIDER
    from energyql.sampler import read_manifest

    return [c.name for c in read_manifest(artifact).stages[-1].context if c.control == SLIDER]


def check_slider_setting(artifact: Path, values: dict[str, float]) -> None:
    """Refuse a setting the artifact cannot take, from its manifest alone (exit 2)."""
    from energyql.sampler import check_context, read_manifest

    params = read_manifest(artifact).stages[-1].context
    if values and not slider_names(artifact):
        raise UsageError("--set needs an artifact trained with sliders; this one has none",
                         hint="sliders are written NAME in LOW..HIGH in the expression")
    check_context(params, values)


@app.command("eval")
@guarded
def eval_command(
    artifact: Annotated[Optional[Path], typer.Argument(help="Artifact directory.")] = None,
    gen: Annotated[Optional[str], typer.Option(
        "--gen", "-g", help="Evaluate a base generator.")] = None,
    expression: Annotated[Optional[str], typer.Option(
        "--expr", "-e", help="Program to measure against.")] = None,
    samples: SamplesOption = 2000,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    threads: ThreadsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    out: FileOutOption = None,
    sampler: Annotated[str, typer.Option(
        help="flow (feed-forward), flow+sir, flow+imh, rejection, importance, langevin, "
             "mala.")] = "flow",
    option: Annotated[Optional[list[str]], typer.Option(
        "--option", help="Sampler option KEY=VALUE (repeatable), e.g. pool=4096.")] = None,
    clip: ClipOption = None,
    face_attributes: FaceAttributesOption = None,
    progress: Annotated[bool, typer.Option(help="Show progress on stderr.")] = True,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Artifacts with sliders: measure at NAME=VALUE (repeatable; sliders not "
                      "given sit at their middles).")] = None,
    frechet: Annotated[bool, typer.Option(
        "--frechet", help="Add the Fréchet distance to exact-target samples in the embedded "
                          "world judge's feature space (worlds whose record names one).")
    ] = False,
    fid: Annotated[Optional[Path], typer.Option(
        "--fid", help="Add the Inception FID against REF: a folder of images or an .npz with "
                      "mu and sigma (needs the Inception weights and energyql[fid]).")] = None,
) -> None:
    """Measure attribute distributions, KL to targets, predicate shares and energies."""
    from energyql.baselines import check_options, parse_options
    from energyql.distributed import current as current_group
    from energyql.evaluation import evaluate
    from energyql.generators import load as load_generator
    from energyql.io import dumps_strict, write_json
    from energyql.lang.api import compile as compile_program
    from energyql.progress import Progress

    check_sampler(sampler)
    if (artifact is None) == (gen is None):
        raise UsageError("give either an ARTIFACT directory or --gen NAME",
                         hint="e.g. energyql eval runs/red-circles, or energyql eval --gen shapes")
    try:  # bad --option values are usage errors, refused before anything is loaded
        options = parse_options(option or [])
        if sampler != "flow" or options:
            check_options(sampler, options)
    except SamplerError as error:
        raise UsageError(error.message, hint=error.hint) from None
    from energyql.cli.sample import parse_setting

    values = dict(parse_setting(s) for s in set_ or [])
    if values and artifact is None:
        raise UsageError("--set needs an ARTIFACT trained with sliders",
                         hint="e.g. energyql eval runs/blue-share --set p=0.3")
    if artifact is not None:
        check_slider_setting(artifact, values)
    set_threads(threads)
    program = compile_program(expression, gen=gen) if expression and gen else expression
    target: Any = str(artifact) if artifact is not None else load_generator(gen, device=device)
    if artifact is not None and (values or slider_names(artifact)):
        from energyql.sampler import load

        target = load(artifact, device=device).at(values)
    prog = Progress(enabled=progress and current_group().is_main)
    with prog.phase(f"evaluating {samples:,} samples with {sampler}"):
        if sampler == "flow" and not options:
            result = evaluate(target, program=program, samples=samples, seed=seed, device=device,
                              clip=clip, face_attributes=face_attributes)
        else:
            result = _evaluate_sampler(sampler, target, program, options, samples, seed, device,
                                       clip, face_attributes)
    if frechet or fid is not None:
        result.update(_distances(target, frechet, fid, samples, seed, device, prog))

    if not current_group().is_main:  # under torchrun, rank 0 speaks for every rank
        return
    if out is not None:
        write_json(out, result)
    if as_json:
        print(dumps_strict(result, what="the evaluation figures"))
    else:
        from energyql.workflow import metrics_table

        stdout.print(metrics_table(result))
