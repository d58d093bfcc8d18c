"""``energyql eval (ARTIFACT | --gen NAME) --samples N [--json]``: measure a sampler."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from energyql.cli.app import (ClipOption, FaceAttributesOption, ThreadsOption, app, check_sampler,
                              environment, guarded, set_threads, stdout)
from energyql.errors import EnergyQLError, UsageError


def _evaluate_sampler(name: str, target, program, option: list[str], samples: int, seed: int,
                      device: str) -> dict:
    """Draw ``samples`` with a baseline or corrected sampler and judge them."""
    from energyql.baselines import parse_options, stage_energy
    from energyql.baselines import sample as draw
    from energyql.evaluation import evaluate_images
    from energyql.sampler import Artifact, load

    source = load(target, device=device) if isinstance(target, str) else target
    if isinstance(source, Artifact):
        program = program or source.manifest.canonical
        catalog = source.sampler.catalog
        result = draw(name, source, n=samples, seed=seed, device=device, **parse_options(option))
    else:
        if program is None:
            raise EnergyQLError(f"--sampler {name} on a generator needs --expr EXPR (its target)")
        catalog = source.catalog
        energy = stage_energy(source, program, device=device)
        result = draw(name, source, energy, n=samples, seed=seed, device=device,
                      **parse_options(option))
    figures = evaluate_images(result.images, catalog, program=program, device=device, seed=seed)
    figures["sampler"] = result.stats
    return figures


@app.command("eval")
@guarded
def eval_command(
    artifact: Annotated[Optional[Path], typer.Argument(help="Artifact directory.")] = None,
    gen: Annotated[Optional[str], typer.Option("--gen", "-g", help="Evaluate a base generator.")] = None,
    expression: Annotated[Optional[str], typer.Option("--expr", "-e", help="Program to measure against.")] = None,
    samples: Annotated[int, typer.Option(help="Samples to judge.")] = 2000,
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    threads: ThreadsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write the JSON here.")] = None,
    sampler: Annotated[str, typer.Option(
        help="flow (feed-forward), flow+sir, flow+imh, rejection, importance, langevin, mala.")] = "flow",
    option: Annotated[Optional[list[str]], typer.Option(
        "--option", help="Sampler option KEY=VALUE (repeatable), e.g. pool=4096.")] = None,
    clip: ClipOption = None,
    face_attributes: FaceAttributesOption = None,
) -> None:
    """Measure attribute distributions, KL to targets, predicate shares and energies."""
    from energyql.evaluation import evaluate
    from energyql.generators import load as load_generator
    from energyql.io import dumps_strict, write_json
    from energyql.lang.api import compile as compile_program

    check_sampler(sampler)
    set_threads(threads)
    if (artifact is None) == (gen is None):
        raise UsageError("give either an ARTIFACT directory or --gen NAME")
    program = compile_program(expression, gen=gen) if expression and gen else expression
    target = str(artifact) if artifact is not None else load_generator(gen, device=device)
    with environment(ENERGYQL_CLIP=clip, ENERGYQL_FACE_ATTRIBUTES=face_attributes):
        if sampler == "flow" and not option:
            result = evaluate(target, program=program, samples=samples, seed=seed, device=device)
        else:
            result = _evaluate_sampler(sampler, target, program, option or [], samples, seed, device)
    from energyql.distributed import current as current_group

    if not current_group().is_main:  # under torchrun, rank 0 speaks for every rank
        return
    if out is not None:
        write_json(out, result)
    if as_json:
        print(dumps_strict(result, what="the evaluation figures"))
    else:
        from energyql.workflow import metrics_table

        stdout.print(metrics_table(result))
