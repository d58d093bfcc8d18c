"""``energyql sample ARTIFACT -n 64 --out grid.png``: feed-forward samples from an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from energyql.cli.app import app, guarded, stdout


@app.command()
@guarded
def sample(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory from `energyql run`.")],
    n: Annotated[int, typer.Option("-n", help="Number of samples.")] = 64,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG grid to write.")] = Path("grid.png"),
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
    truncation: Annotated[Optional[float], typer.Option(help="Truncation (StyleGAN2).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    tensors: Annotated[Optional[Path], typer.Option(help="Also save the images as safetensors.")] = None,
) -> None:
    """Sample N images from a trained artifact (no control models are loaded)."""
    from energyql.io import save_tensors
    from energyql.report import save_grid
    from energyql.sampler import load

    options = {"truncation": truncation} if truncation is not None else {}
    images = load(artifact, device=device, **options).sample(n, seed=seed)
    save_grid(out, images, scale=2 if images.shape[-1] <= 64 else 1)
    if tensors is not None:
        save_tensors(tensors, {"images": images})
    stdout.print(f"wrote {n} samples to {out}")
