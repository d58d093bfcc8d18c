"""``energyql sample ARTIFACT -n 64 --out grid.png``: feed-forward samples from an artifact."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from energyql.cli.app import (
    MAX_SAMPLES,
    CountOption,
    DeviceOption,
    SeedOption,
    ThreadsOption,
    TruncationOption,
    app,
    check_sampler,
    file_target,
    guarded,
    output_path,
    set_threads,
    stdout,
)
from energyql.errors import SamplerError, UsageError


def parse_setting(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` -> (name, value)."""
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise UsageError(f"--set expects NAME=NUMBER, got '{text}'",
                         hint="e.g. --set x=0.4") from None


#: Most values a --sweep may visit (columns of the grid).
MAX_SWEEP_STEPS = 1000
#: Noises decoded together while sweeping (each is decoded once per value of the sweep).
SWEEP_CHUNK = 256


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """``NAME=LOW..HIGH:STEPS`` -> (name, evenly spaced values from LOW to HIGH exactly)."""
    from energyql.sampler import context_grid

    name, _, rest = text.partition("=")
    span, _, steps = rest.partition(":")
    low, dots, high = span.partition("..")
    try:
        count = int(steps or 5)
        low_value, high_value = float(low), float(high)
    except ValueError:
        raise UsageError(f"--sweep expects NAME=LOW..HIGH:STEPS, got '{text}'",
                         hint="e.g. --sweep x=0.3..0.7:7") from None
    if not dots or not 2 <= count <= MAX_SWEEP_STEPS:
        raise UsageError(f"--sweep expects NAME=LOW..HIGH:STEPS with STEPS from 2 to "
                         f"{MAX_SWEEP_STEPS}, got '{text}'", hint="e.g. --sweep x=0.3..0.7:7")
    if not (math.isfinite(low_value) and math.isfinite(high_value)):
        raise UsageError(f"--sweep needs finite LOW and HIGH, got '{text}'",
                         hint="e.g. --sweep x=0.3..0.7:7")
    return name.strip(), context_grid(low_value, high_value, count)


def stats_table(stats: dict, setting: dict[str, float] | None = None):
    """A rich table of a sampler's figures (acceptance rate, ESS, proposals, ...), titled with
    the slider setting it sampled at, if any."""
    from rich.table import Table

    at = f" at {', '.join(f'{k}={v:g}' for k, v in setting.items())}" if setting else ""
    table = Table(title=f"sampler {stats.get('sampler')}{at}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        if not isinstance(value, dict):
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    return table


def check_request(artifact: Path, values: dict[str, float], sweep: tuple[str, list[float]] | None,
                  sampler: str, options: dict) -> None:
    """Refuse context values and sampler options the artifact cannot take, from its manifest
    alone (before the generator is loaded or anything is written): UsageError, exit 2."""
    from energyql.baselines import check_options
    from energyql.energies.sliders import SLIDER
    from energyql.sampler import check_context, read_manifest

    params = read_manifest(artifact).stages[-1].context
    if sweep is not None:
        if not params:
            raise UsageError("--sweep needs an artifact with sliders or pose parameters",
                             hint="this artifact is unconditional; drop --sweep")
        name, points = sweep
        for point in (points[0], points[-1]):
            check_context(params, {**values, name: point})
    check_context(params, values)
    if sampler != "flow" or options:
        if any(p.control != SLIDER for p in params):
            raise UsageError("--sampler and --option work on unconditional artifacts and "
                             "artifacts with sliders only (at one --set setting)",
                             hint="sample a pose-conditional artifact with the flow (the "
                                  "default)")
        try:
            check_options(sampler, options)
        except SamplerError as error:  # a bad value given on the command line: usage
            raise UsageError(error.message, hint=error.hint) from None


@app.command()
@guarded
def sample(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory from `energyql run`.")],
    n: CountOption = 64,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="PNG grid to write (default: grid.png).", parser=output_path,
        callback=file_target)] = None,
    seed: SeedOption = 0,
    truncation: TruncationOption = None,
    device: DeviceOption = "cpu",
    threads: ThreadsOption = None,
    tensors: Annotated[Optional[Path], typer.Option(
        help="Also save the images as safetensors.", parser=output_path,
        callback=file_target)] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Conditional samplers: fix a parameter, NAME=VALUE (repeatable).")] = None,
    sweep: Annotated[Optional[str], typer.Option(
        help="Conditional samplers: NAME=LOW..HIGH:STEPS, one row per noise along the "
             "sweep.")] = None,
    sampler: Annotated[str, typer.Option(
        help="flow (feed-forward), flow+sir, flow+imh, rejection, importance, langevin, "
             "mala.")] = "flow",
    option: Annotated[Optional[list[str]], typer.Option(
        "--option", help="Sampler option KEY=VALUE (repeatable), e.g. pool=4096.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress on stderr.")] = True,
) -> None:
    """Sample N images from a trained artifact (the flow needs no control models; the
    corrected and baseline samplers judge proposals with them)."""
    check_sampler(sampler)
    target: Path = out if out is not None else Path("grid.png")
    values = dict(parse_setting(s) for s in set_ or [])
    swept = parse_sweep(sweep) if sweep is not None else None
    from energyql.baselines import parse_options

    try:
        options = parse_options(option or [])
    except SamplerError as error:
        raise UsageError(error.message, hint=error.hint) from None
    if swept is not None and n * len(swept[1]) > MAX_SAMPLES:
        raise UsageError(f"-n {n} with a sweep of {len(swept[1])} values asks for "
                         f"{n * len(swept[1]):,} images, more than {MAX_SAMPLES:,}",
                         hint="fewer noises (-n) or fewer sweep steps")
    check_request(artifact, values, swept, sampler, options)

    import torch

    from energyql.io import save_tensors
    from energyql.progress import Progress
    from energyql.report import save_grid
    from energyql.sampler import Sampler, load

    set_threads(threads)
    prog = Progress(enabled=progress)
    generator_options: dict[str, Any] = {"truncation": truncation} if truncation is not None \
        else {}
    with prog.phase(f"sampling {n:,} images with {sampler}"):
        if sampler != "flow" or option:
            from energyql.baselines import sample as draw

            art = load(artifact, device=device, **generator_options)
            # The corrected samplers aim at one setting's target: a sweep samples each setting
            # on its own (column j holds n samples of the j-th value).
            settings = [values] if swept is None else \
                [{**values, swept[0]: v} for v in swept[1]]
            drawn = []
            for setting in settings:
                view = art.at(setting) if art.sliders else art
                result = draw(sampler, view, n=n, seed=seed, device=device, **options)
                if result.images is None:
                    raise SamplerError(f"the {sampler} sampler returned latents only, no images")
                drawn.append(result.images)
                stdout.print(stats_table(result.stats, view.setting))
            images = drawn[0] if swept is None else torch.stack(drawn, 1).flatten(0, 1)
            columns = None if swept is None else len(drawn)
        else:
            model = Sampler.load(artifact, device=device, **generator_options)
            if swept is None:
                images = model.sample(n, seed=seed, context=values or None).cpu()
                columns = None
            else:
                name, points = swept
                eps = model.noise(n, seed=seed)
                # Row i is noise i; column j is the j-th value of the sweep. Decoded a chunk
                # of noises at a time, as plain sampling does, so memory does not grow with -n.
                rows = []
                with torch.no_grad():
                    for start in range(0, n, SWEEP_CHUNK):
                        chunk = eps[start:start + SWEEP_CHUNK]
                        rows.append(torch.stack([model(chunk, {**values, name: v}).cpu()
                                                 for v in points], dim=1))
                images = torch.cat(rows).flatten(0, 1)
                columns = len(points)
    save_grid(target, images, columns=columns, scale=2 if images.shape[-1] <= 64 else 1)
    if tensors is not None:
        save_tensors(tensors, {"images": images})
    stdout.print(f"wrote {len(images)} samples to {target}", markup=False)


__all__ = ["MAX_SWEEP_STEPS", "SWEEP_CHUNK", "check_request", "parse_setting", "parse_sweep",
           "sample", "stats_table"]
