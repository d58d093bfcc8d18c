"""The whole ``energyql run`` job: train, sample grids, evaluate, write the report.

Also :func:`defaults_for`, the training defaults a generator's spec and world give a run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from energyql.io import write_json
from energyql.manifest import Manifest


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

    out: Path
    metrics: dict
    manifest: Manifest

    def summary_table(self):
        return metrics_table(self.metrics)


def metrics_table(metrics: dict):
    """Return a rich table of the headline figures (controlled vs base where known)."""
    from rich.table import Table

    base = metrics.get("base", {})
    table = Table(title=f"evaluation on {metrics.get('samples')} samples")
    table.add_column("figure")
    table.add_column("base", justify="right")
    table.add_column("value", justify="right")
    for key, value in metrics.get("kl_to_target", {}).items():
        table.add_row(f"KL to target: {key}", str(base.get("kl_to_target", {}).get(key, "")), str(value))
    for key, value in metrics.get("predicate_share", {}).items():
        table.add_row(f"share: {key}", str(base.get("predicate_share", {}).get(key, "")), str(value))
    for key, value in metrics.get("collateral_drift", {}).items():
        table.add_row(f"collateral drift (TV): {key}", "", str(value))
    for key, value in metrics.get("ess", {}).items():
        table.add_row(f"ESS fraction: {key}", "", str(value))
    for attribute, shares in metrics.get("attributes", {}).items():
        base_shares = base.get("attributes", {}).get(attribute, {})
        table.add_row(attribute,
                      " ".join(f"{v}={s:.2f}" for v, s in base_shares.items()),
                      " ".join(f"{v}={s:.2f}" for v, s in shares.items()))
    return table


def run_and_report(program, *, expression: str, gen: str = "shapes", out: str | Path,
                   seed: int = 0, device: str = "cpu", amp: bool = False,
                   threads: int | None = None, truncation: float | None = None,
                   resume: bool = False, start_from: str | Path | None = None,
                   samples: int = 2000, progress: bool = True, grid: int = 64,
                   **overrides) -> RunResult:
    """Train ``program`` and write artifact, ``samples.png``, ``base.png``, ``metrics.json``
    and ``report.md`` into ``out``."""
    import torch

    from energyql.distributed import current as current_group
    from energyql.distributed import device_for
    from energyql.evaluation import evaluate
    from energyql.report import save_grid, write_report
    from energyql.sampler import load
    from energyql.trainer import TrainConfig, train

    out = Path(out)
    settings = {**defaults_for(gen), **overrides}
    device = device_for(device, current_group())
    config = replace(TrainConfig(), seed=seed, device=device, amp=amp, threads=threads,
                     **settings)
    generator_options = {"truncation": truncation} if truncation is not None else {}
    start = load(start_from, device=device, **generator_options) if start_from else None
    artifact = train(program, gen, config, out=out, resume=resume, start=start,
                     progress=progress, **generator_options)
    sampler = artifact.sampler.eval()
    # Evaluation is sharded over ranks under torchrun; files are written by rank 0 only.
    metrics = evaluate(artifact, samples=samples, seed=seed, device=device)
    if current_group().is_main:
        noise = torch.randn(grid, sampler.latent_dim,
                            generator=torch.Generator().manual_seed(seed)).to(device)
        scale = 2 if sampler.image_size and sampler.image_size <= 64 else 1
        with torch.no_grad():
            if sampler.context_params:
                # A conditional sampler: one row per noise, its first parameter swept along it.
                rows, first = noise[:8], sampler.context_params[0]
                values = torch.linspace(first.low, first.high, 8).tolist()
                sweep = torch.stack([sampler.decode(rows, sampler.context_tensor(
                    {first.name: v}, len(rows)).to(device)) for v in values], 1).flatten(0, 1)
                save_grid(out / "samples.png", sweep, columns=len(values), scale=scale)
            else:
                save_grid(out / "samples.png", sampler.decode(noise), scale=scale)
            save_grid(out / "base.png", sampler.root.decode(noise), scale=scale)
        artifact.manifest = artifact.manifest.with_metrics(metrics)
        artifact.save(out)
        write_json(out / "metrics.json", metrics)
        write_report(out, artifact.manifest, metrics)
    current_group().barrier()
    return RunResult(out, metrics, artifact.manifest)
