"""Small charts drawn with PIL: line plots and grouped bar charts with labelled axes.

Enough for the run's ``curves.png`` and the report's histograms without a plotting
dependency; each function returns a PIL image, ``png_bytes`` encodes it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

PALETTE = [(40, 110, 220), (220, 90, 40), (40, 160, 90), (150, 80, 190), (200, 160, 30),
           (90, 90, 90)]
BASE_GREY = (150, 150, 160)
TARGET_RED = (200, 30, 30)
_AXIS = (60, 60, 60)
_GRID = (228, 228, 232)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Return round tick values covering [low, high] (about ``count`` of them)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw),
               default=10 * magnitude)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def tick_label(value: float) -> str:
    """Return a compact tick label (no trailing zeros, k/M for large numbers)."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:.4g}"


class _Frame:
    """Plot area of one chart: maps data to pixels and draws axes, ticks and labels."""

    def __init__(self, draw, box: tuple[int, int, int, int], x_range, y_range, font):
        self.draw, self.font = draw, font
        self.left, self.top, self.right, self.bottom = box
        self.x_ticks = nice_ticks(*x_range)
        self.y_ticks = nice_ticks(*y_range)
        self.x0, self.x1 = self.x_ticks[0], self.x_ticks[-1]
        self.y0, self.y1 = self.y_ticks[0], self.y_ticks[-1]

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0 or 1) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - (y - self.y0) / (self.y1 - self.y0 or 1) * (self.bottom - self.top)

    def axes(self, x_label: str, y_label: str, *, x_ticks: bool = True) -> None:
        d, f = self.draw, self.font
        for y in self.y_ticks:
            d.line([self.left, self.py(y), self.right, self.py(y)], fill=_GRID)
            text = tick_label(y)
            d.text((self.left - 6 - d.textlength(text, font=f), self.py(y) - 6), text,
                   fill=_AXIS, font=f)
        if x_ticks:
            for x in self.x_ticks:
                d.line([self.px(x), self.bottom, self.px(x), self.bottom + 4], fill=_AXIS)
                text = tick_label(x)
                d.text((self.px(x) - d.textlength(text, font=f) / 2, self.bottom + 6), text,
                       fill=_AXIS, font=f)
        d.line([self.left, self.top, self.left, self.bottom], fill=_AXIS)
        d.line([self.left, self.bottom, self.right, self.bottom], fill=_AXIS)
        d.text(((self.left + self.right - d.textlength(x_label, font=f)) / 2, self.bottom + 22),
               x_label, fill=_AXIS, font=f)
        d.text((8, self.top - 18), y_label, fill=_AXIS, font=f)


def line_chart(title: str, series: Mapping[str, Sequence[tuple[float, float]]], *,
               x_label: str = "step", y_label: str = "", size: tuple[int, int] = (520, 300)):
    """Return a line plot of named (x, y) series with axes, ticks and a legend."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(picture)
    font, bold = _font(12), _font(14)
    points = [(x, y) for values in series.values() for x, y in values if math.isfinite(y)]
    xs = [x for x, _ in points] or [0.0, 1.0]
    ys = [y for _, y in points] or [0.0, 1.0]
    frame = _Frame(draw, (62, 52, size[0] - 16, size[1] - 46), (min(xs), max(xs)),
                   (min(ys), max(ys)), font)
    draw.text((10, 8), title, fill="black", font=bold)
    frame.axes(x_label, y_label)
    legend_x = 62
    for k, (name, values) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        finite = [(frame.px(x), frame.py(y)) for x, y in values if math.isfinite(y)]
        if len(finite) > 1:
            draw.line(finite, fill=colour, width=2)
        elif finite:
            x, y = finite[0]
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.line([legend_x, 36, legend_x + 16, 36], fill=colour, width=3)
        draw.text((legend_x + 20, 29), name, fill="black", font=font)
        legend_x += 36 + int(draw.textlength(name, font=font))
    return picture


def bar_chart(title: str, categories: Sequence[str], groups: Mapping[str, Sequence[float]], *,
              target: Sequence[float] | None = None, y_label: str = "share",
              x_label: str = "", colours: Sequence[tuple[int, int, int]] | None = None):
    """Return a grouped bar chart (one bar per group and category), the target as red marks."""
    from PIL import Image, ImageDraw

    font, bold = _font(12), _font(14)
    colours = list(colours or [BASE_GREY, *PALETTE])
    bar = 16
    slot = bar * len(groups) + 18
    width = max(360, 80 + slot * len(categories))
    picture = Image.new("RGB", (width, 300), "white")
    draw = ImageDraw.Draw(picture)
    peak = max([v for values in groups.values() for v in values] + list(target or []) + [1e-9])
    frame = _Frame(draw, (62, 52, width - 16, 300 - 62), (0.0, 1.0),
                   (0.0, min(1.0, peak * 1.1) if peak <= 1 else peak * 1.1), font)
    frame.x0, frame.x1 = 0.0, float(len(categories))
    draw.text((10, 8), title, fill="black", font=bold)
    frame.axes(x_label, y_label, x_ticks=False)
    legend_x = 62
    for g, name in enumerate(groups):
        draw.rectangle([legend_x, 31, legend_x + 12, 41], fill=colours[g % len(colours)])
        draw.text((legend_x + 16, 29), name, fill="black", font=font)
        legend_x += 30 + int(draw.textlength(name, font=font))
    if target is not None:
        draw.line([legend_x, 36, legend_x + 14, 36], fill=TARGET_RED, width=3)
        draw.text((legend_x + 18, 29), "target", fill="black", font=font)
    for i, category in enumerate(categories):
        centre = frame.px(i + 0.5)
        start = centre - bar * len(groups) / 2
        for g, values in enumerate(groups.values()):
            x = start + g * bar
            draw.rectangle([x, frame.py(values[i]), x + bar - 2, frame.bottom],
                           fill=colours[g % len(colours)])
        if target is not None:
            y = frame.py(target[i])
            draw.line([start - 4, y, start + bar * len(groups) + 2, y], fill=TARGET_RED, width=3)
        label = category if len(category) <= 12 else category[:11] + "…"
        draw.text((centre - draw.textlength(label, font=font) / 2, frame.bottom + 6), label,
                  fill=_AXIS, font=font)
    return picture


def stack(pictures: Sequence, columns: int = 2, *, gap: int = 8):
    """Return one image with ``pictures`` placed in a grid, ``columns`` wide."""
    from PIL import Image

    rows = [pictures[i:i + columns] for i in range(0, len(pictures), columns)]
    width = max(sum(p.width for p in row) + gap * (len(row) - 1) for row in rows)
    height = sum(max(p.height for p in row) for row in rows) + gap * (len(rows) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    y = 0
    for row in rows:
        x = 0
        for picture in row:
            canvas.paste(picture, (x, y))
            x += picture.width + gap
        y += max(p.height for p in row) + gap
    return canvas


def png_bytes(picture) -> bytes:
    """Return a PIL image encoded as PNG."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
