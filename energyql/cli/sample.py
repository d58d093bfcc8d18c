"""``energyql sample ARTIFACT -n 64 --out grid.png``: feed-forward samples from an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from energyql.cli.app import ThreadsOption, app, check_sampler, guarded, set_threads, stdout
from energyql.errors import EnergyQLError


def parse_setting(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` -> (name, value)."""
    name, sep, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise EnergyQLError(f"--set expects NAME=NUMBER, got '{text}'") from None


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """``NAME=LOW..HIGH:STEPS`` -> (name, evenly spaced values)."""
    name, _, rest = text.partition("=")
    span, _, steps = rest.partition(":")
    low, dots, high = span.partition("..")
    try:
        count = int(steps or 5)
        low_value, high_value = float(low), float(high)
    except ValueError:
        raise EnergyQLError(f"--sweep expects NAME=LOW..HIGH:STEPS, got '{text}'") from None
    if not dots or count < 2:
        raise EnergyQLError(f"--sweep expects NAME=LOW..HIGH:STEPS with STEPS >= 2, got '{text}'")
    return name.strip(), [low_value + (high_value - low_value) * i / (count - 1) for i in range(count)]


def stats_table(stats: dict):
    """A rich table of a sampler's figures (acceptance rate, ESS, proposals, ...)."""
    from rich.table import Table

    table = Table(title=f"sampler {stats.get('sampler')}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        if not isinstance(value, dict):
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    return table


@app.command()
@guarded
def sample(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory from `energyql run`.")],
    n: Annotated[int, typer.Option("-n", help="Number of samples (rows, with --sweep).")] = 64,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG grid to write.")] = Path("grid.png"),
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
    truncation: Annotated[Optional[float], typer.Option(help="Truncation (StyleGAN2).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    threads: ThreadsOption = None,
    tensors: Annotated[Optional[Path], typer.Option(help="Also save the images as safetensors.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Conditional samplers: fix a parameter, NAME=VALUE (repeatable).")] = None,
    sweep: Annotated[Optional[str], typer.Option(
        help="Conditional samplers: NAME=LOW..HIGH:STEPS, one row per noise along the sweep.")] = None,
    sampler: Annotated[str, typer.Option(
        help="flow (feed-forward), flow+sir, flow+imh, rejection, importance, langevin, mala.")] = "flow",
    option: Annotated[Optional[list[str]], typer.Option(
        "--option", help="Sampler option KEY=VALUE (repeatable), e.g. pool=4096.")] = None,
) -> None:
    """Sample N images from a trained artifact (the flow needs no control models; the
    corrected and baseline samplers judge proposals with them)."""
    import torch

    from energyql.io import save_tensors
    from energyql.report import save_grid
    from energyql.sampler import load

    check_sampler(sampler)
    set_threads(threads)
    options = {"truncation": truncation} if truncation is not None else {}
    art = load(artifact, device=device, **options)
    values = dict(parse_setting(s) for s in set_ or [])
    if sampler != "flow" or option:
        from energyql.baselines import parse_options
        from energyql.baselines import sample as draw

        if art.sampler.context_params:
            raise EnergyQLError("--sampler works on unconditional artifacts only")
        result = draw(sampler, art, n=n, seed=seed, device=device, **parse_options(option or []))
        images, columns = result.images, None
        stdout.print(stats_table(result.stats))
    elif sweep is None:
        images = art.sample(n, seed=seed, context=values if art.sampler.context_params else None)
        columns = None
    else:
        if not art.sampler.context_params:
            raise EnergyQLError("--sweep needs a conditional artifact (one trained with pose(...))")
        name, points = parse_sweep(sweep)
        noise = torch.randn(n, art.sampler.latent_dim, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            # Row i is noise i; column j is the j-th value of the sweep.
            images = torch.stack([art.sampler.decode(
                noise.to(device), art.sampler.context_tensor({**values, name: v}, n).to(device)).cpu()
                for v in points], dim=1).flatten(0, 1)
        columns = len(points)
    save_grid(out, images, columns=columns, scale=2 if images.shape[-1] <= 64 else 1)
    if tensors is not None:
        save_tensors(tensors, {"images": images})
    stdout.print(f"wrote {len(images)} samples to {out}")
