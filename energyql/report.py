"""Run reports: image grids, per-attribute histograms (PNG) and ``report.md``."""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from energyql.io import write_bytes, write_text
from energyql.manifest import Manifest

_BASE_COLOUR = (150, 150, 160)
_OURS_COLOUR = (40, 110, 220)


def grid_png(images: torch.Tensor, *, columns: int | None = None, scale: int = 1) -> bytes:
    """Return PNG bytes of a grid of images in [0, 1] (``scale`` enlarges small images)."""
    from PIL import Image
    from torchvision.utils import make_grid

    columns = columns or max(1, int(math.ceil(math.sqrt(len(images)))))
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=columns, padding=2,
                     pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    picture = Image.fromarray(array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(path: str | Path, images: torch.Tensor, **options) -> Path:
    """Write a grid of images as a PNG file (atomically)."""
    return write_bytes(path, grid_png(images, **options))


def histogram_png(title: str, values: list[str], base: list[float], ours: list[float]) -> bytes:
    """Return PNG bytes of a paired bar chart: base (grey) vs controlled (blue) shares."""
    from PIL import Image, ImageDraw

    bar, gap, height, top, bottom = 14, 18, 160, 28, 44
    width = max(260, len(values) * (2 * bar + gap) + 40)
    picture = Image.new("RGB", (width, top + height + bottom), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((10, 6), f"{title}   (grey: base, blue: controlled)", fill="black")
    peak = max([*base, *ours, 1e-9])
    for i, value in enumerate(values):
        x = 20 + i * (2 * bar + gap)
        for j, (share, colour) in enumerate(((base[i], _BASE_COLOUR), (ours[i], _OURS_COLOUR))):
            h = int(round(height * share / peak))
            draw.rectangle([x + j * bar, top + height - h, x + (j + 1) * bar - 2, top + height],
                           fill=colour)
        draw.text((x, top + height + 4), value[:9], fill="black")
        draw.text((x, top + height + 18), f"{ours[i]:.2f}", fill=_OURS_COLOUR)
    draw.line([15, top + height, width - 10, top + height], fill="black")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _table(rows: list[list[str]]) -> str:
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def write_report(directory: str | Path, manifest: Manifest, metrics: dict) -> Path:
    """Write ``report.md`` and ``hist_<attribute>.png`` files into ``directory``."""
    directory = Path(directory)
    base = metrics.get("base", {})
    parts = ["# energyql run report\n", f"Expression: `{manifest.source}`  ",
             f"Canonical: `{manifest.canonical}`  ",
             f"Generator: `{manifest.generator.id}` (weights "
             f"`{manifest.generator.weights_digest[:12]}`)  ",
             f"Samples judged: {metrics.get('samples')} controlled, {base.get('samples', 0)} base\n",
             "![controlled samples](samples.png) ![base samples, same noise](base.png)\n",
             "## Stages\n"]
    rows = [["stage", "expression", "steps", "seconds", "final loss", "moment fit (max error, ESS)"]]
    for stage in manifest.stages:
        fit = stage.fits[-1] if stage.fits else None
        train = stage.train
        rows.append([str(stage.index), f"`{stage.source}`", str(train.steps if train else "—"),
                     str(train.seconds if train else "—"), str(stage.final_loss),
                     f"{fit.max_moment_error}, {fit.ess:.0f}/{fit.samples}" if fit else "—"])
    parts.append(_table(rows) + "\n")
    for stage in manifest.stages:
        for warning in stage.warnings:
            parts.append(f"> warning: {warning}\n")
    headline = [["figure", "base", "controlled"]]
    for key, value in metrics.get("kl_to_target", {}).items():
        headline.append([f"KL to target ({key})", str(base.get("kl_to_target", {}).get(key, "—")),
                         str(value)])
    for key, value in metrics.get("predicate_share", {}).items():
        headline.append([f"share satisfying {key}",
                         str(base.get("predicate_share", {}).get(key, "—")), str(value)])
    for key, value in metrics.get("collateral_drift", {}).items():
        headline.append([f"collateral drift of {key} (TV to exact target)", "—", str(value)])
    for key, value in metrics.get("ess", {}).items():
        headline.append([f"ESS fraction towards the exact target ({key})", "—", str(value)])
    parts += ["## Headline figures\n", _table(headline) + "\n", "## Attributes\n"]
    for attribute, shares in metrics.get("attributes", {}).items():
        values = list(shares)
        ours = [shares[v] for v in values]
        theirs = [base.get("attributes", {}).get(attribute, {}).get(v, 0.0) for v in values]
        name = f"hist_{attribute}.png"
        write_bytes(directory / name, histogram_png(attribute, values, theirs, ours))
        rows = [["value", "base", "controlled"]] + [[v, f"{b:.3f}", f"{o:.3f}"]
                                                     for v, b, o in zip(values, theirs, ours)]
        parts += [f"### {attribute}\n", f"![{attribute}]({name})\n", _table(rows) + "\n"]
    return write_text(directory / "report.md", "\n".join(parts))
