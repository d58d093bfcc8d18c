"""What the explorer page draws: grids, judged histograms and stage comparisons of a run.

Thin over the Python API: runs load with :func:`energyql.load`, grids come from
:class:`energyql.Sampler` exactly as ``energyql sample`` draws them (the same noise for the
same seed, the same grid layout), ``flow+sir`` from :func:`energyql.baselines.sample`. Loaded
runs and the worlds' judges are kept, so that moving a slider only samples and judges. What a
run measured along its sliders is read from its ``metrics.json`` (:func:`slider_sweeps`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energyql.app.runs import REPORTS, RunsDir
from energyql.errors import ArtifactError, UsageError, check_choice
from energyql.manifest import MANIFEST, Manifest
from energyql.metrics import RunMetrics

#: Images in the page's grid (and in its downloaded PNG).
GRID = 16
#: Samplers the page offers: feed-forward, and corrected towards the exact target.
PAGE_SAMPLERS = ("flow", "flow+sir")
#: Largest seed (torch.Generator.manual_seed takes 64-bit values; the CLI's bound).
MAX_SEED = 2**63 - 1
#: Runs kept loaded (each holds its flows and its generator).
KEEP_LOADED = 4
#: Most sliders, settings per slider and cells (or predicates) per setting the page tables.
MAX_SLIDERS, MAX_SWEEP_ROWS, MAX_COLUMNS = 16, 101, 8


def whole(value: Any, name: str, low: int, high: int) -> int:
    """Return ``value`` as an int if it is a whole number in ``low..high`` (else UsageError).

    Accepts ints and the text of one (a form field); refuses bools, floats and other text.
    """
    # ASCII digits only: str.isdigit() also passes '²' (which int() refuses) and other
    # scripts' digits (which would end up in a download's filename header).
    if isinstance(value, str) and len(value) < 40 and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be a whole number, got {_short(value)}",
                         hint=f"give {name} from {low:,} to {high:,}")
    if not low <= value <= high:
        raise UsageError(f"{name} must be from {low:,} to {high:,}, got {value:,}",
                         hint=f"give {name} from {low:,} to {high:,}")
    return value


def number(value: Any, name: str) -> float:
    """Return ``value`` as a finite float (a JSON number or its text), else UsageError."""
    if isinstance(value, str) and len(value) < 40:
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {_short(value)}")
    return float(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def png_data_url(data: bytes) -> str:
    """Return PNG bytes as a ``data:`` URL for an ``<img>``."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


@dataclass
class Drawing:
    """One grid as the page shows it: PNG bytes, judged figures and the time it took."""

    png: bytes
    seconds: float
    attributes: dict[str, dict[str, float]] = field(default_factory=dict)
    pose: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"grid": png_data_url(self.png), "seconds": round(self.seconds, 4),
                "attributes": self.attributes, "pose": self.pose, "stats": self.stats}


@dataclass
class Loaded:
    """A run as loaded once: its artifact, its torch sampler and where it came from."""

    stamp: tuple[int, int]
    artifact: Any
    sampler: Any
    energy: Any = None  # the last stage's energy, for flow+sir (built on first use)


class Explorer:
    """Creates the explorer's model side over a runs folder.

    Arguments:
        runs: the guarded runs folder.
        device: where runs are loaded and sampled.
    """

    def __init__(self, runs: RunsDir, *, device: str = "cpu"):
        self.runs = runs
        self.device = device
        self._loaded: OrderedDict[Path, Loaded] = OrderedDict()
        self._judges: dict[str, Any] = {}
        self._lock = threading.RLock()  # one model computation at a time: 2 cores are shared

    # -- reading a run (no torch) ----------------------------------------------------------
    def info(self, name: Any) -> dict[str, Any]:
        """Return what the page shows of a run before drawing: expression, stages, sliders,
        samplers, headline figures and which reports it has."""
        folder = self.runs.resolve(name)
        manifest = Manifest.read(folder)
        context = [c.to_dict() for c in manifest.stages[-1].context]
        return {
            "name": name,
            "source": manifest.source,
            "canonical": manifest.canonical,
            "generator": manifest.generator.id,
            "stages": [{"index": s.index, "source": s.source} for s in manifest.stages],
            "context": context,
            "samplers": ["flow"] if context else list(PAGE_SAMPLERS),
            **self._figures(folder),
            "reports": [kind for kind, file in REPORTS.items() if (folder / file).is_file()],
        }

    def _figures(self, folder: Path) -> dict[str, Any]:
        """Return the run's measured figures for the page: ``headline`` (the report's table)
        and ``sliders`` (each slider's sweep, see :func:`slider_sweeps`)."""
        path = folder / "metrics.json"
        if not path.is_file() or path.stat().st_size > 16 << 20:
            return {"headline": [], "sliders": []}
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # not UTF-8 or JSON, a 5,000-digit
            # number, nesting deeper than the parser goes
            return {"headline": [["figure", "base", "controlled"],
                                 ["metrics.json cannot be read", "—", "—"]], "sliders": []}
        if not isinstance(raw, dict):
            return {"headline": [], "sliders": []}
        from energyql.report import headline_rows

        try:
            metrics = RunMetrics.from_dict(raw)
            return {"headline": headline_rows(metrics), "sliders": slider_sweeps(metrics)}
        except (AttributeError, KeyError, TypeError, ValueError):  # a hand-edited file
            return {"headline": [["figure", "base", "controlled"],
                                 ["metrics.json has an unexpected shape", "—", "—"]],
                    "sliders": []}

    # -- loading (torch) -------------------------------------------------------------------
    def load(self, name: Any) -> Loaded:
        """Return the run ``name`` loaded (reloaded when its manifest changed)."""
        folder = self.runs.resolve(name)
        stat = (folder / MANIFEST).stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            kept = self._loaded.get(folder)
            if kept is not None and kept.stamp == stamp:
                self._loaded.move_to_end(folder)
                return kept
            from energyql.sampler import Sampler, load

            artifact = load(folder, device=self.device)
            loaded = Loaded(stamp, artifact, Sampler(artifact))
            self._loaded[folder] = loaded
            while len(self._loaded) > KEEP_LOADED:
                self._loaded.popitem(last=False)
            return loaded

    def _judge(self, catalog: Any) -> Any:
        from energyql.energies import ControlModels

        if catalog.name not in self._judges:
            self._judges[catalog.name] = ControlModels(catalog, device=self.device)
        return self._judges[catalog.name]

    # -- what the page asks for ------------------------------------------------------------
    def check_request(self, name: Any, seed: Any, sampler: Any,
                      context: Any) -> tuple[int, str, dict[str, float]]:
        """Return (seed, sampler, context values) if the run can take them (else UsageError),
        from its manifest alone."""
        from energyql.sampler import check_context

        seed = whole(seed, "seed", 0, MAX_SEED)
        if not isinstance(sampler, str):
            raise UsageError("sampler must be a name", hint="flow or flow+sir")
        check_choice(sampler, PAGE_SAMPLERS, what="sampler")
        if context is not None and not isinstance(context, Mapping):
            raise UsageError("context must map parameter names to numbers",
                             hint='e.g. {"x": 0.4}')
        values = {str(k): number(v, f"context value {k}") for k, v in (context or {}).items()}
        params = Manifest.read(self.runs.resolve(name)).stages[-1].context
        values = check_context(params, values)
        if params and sampler != "flow":
            raise UsageError(f"the {sampler} sampler works on unconditional runs only",
                             hint="sample a conditional run with the flow")
        return seed, sampler, values

    def draw(self, name: Any, *, seed: Any = 0, sampler: Any = "flow",
             context: Any = None, judge: bool = True) -> Drawing:
        """Return the grid of :data:`GRID` samples of run ``name``, and what the judges read.

        With the flow this is ``energyql sample RUN -n 16 --seed SEED --set ...``, pixel for
        pixel; ``flow+sir`` is ``--sampler flow+sir``.
        """
        seed, sampler, values = self.check_request(name, seed, sampler, context)
        began = time.perf_counter()
        with self._lock:
            import torch

            from energyql.report import grid_png

            loaded = self.load(name)
            stats: dict[str, Any] = {}
            if sampler == "flow":
                images = loaded.sampler.sample(GRID, seed=seed, context=values or None).cpu()
            else:
                from energyql.baselines import sample, stage_energy

                if loaded.energy is None:
                    loaded.energy = stage_energy(loaded.artifact, device=self.device)
                result = sample(sampler, loaded.artifact, loaded.energy, n=GRID, seed=seed,
                                device=self.device)
                if result.images is None:
                    raise ArtifactError(f"the {sampler} sampler returned no images")
                images = result.images.cpu()
                stats = {k: v for k, v in result.stats.items()
                         if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
            png = grid_png(images, scale=_scale(images))
            drawing = Drawing(png, 0.0, stats=stats)
            if judge:
                with torch.no_grad():
                    self._read(loaded, images, values, drawing)
        drawing.seconds = time.perf_counter() - began
        return drawing

    def _read(self, loaded: Loaded, images: Any, values: dict[str, float],
              drawing: Drawing) -> None:
        """Fill in the judged attribute shares and, for conditional runs, the pose readings."""
        from energyql.evaluation import figures, judge

        chain = loaded.artifact.sampler
        catalog = chain.catalog
        if isinstance(catalog, str):
            from energyql.catalog import CATALOGS

            catalog = CATALOGS[catalog]
        models = self._judge(catalog)
        if catalog.attributes:
            judged = judge(None, len(images), models, [], images=images, device=self.device)
            drawing.attributes = figures(judged, None, catalog)["attributes"]
        # Sliders have no reading to compare with; pose parameters are read back from images.
        params = [p for p in chain.context_params if catalog.control(p.control) is not None]
        if params:
            control = catalog.control(params[0].control)
            readings = models.pose(control)(images.to(self.device))
            for param in params:
                if param.name not in readings:
                    continue
                read = readings[param.name].detach().float().cpu().tolist()
                requested = values.get(param.name, (param.low + param.high) / 2)
                drawing.pose[param.name] = {
                    "requested": requested, "read": [round(v, 4) for v in read],
                    "low": param.low, "high": param.high,
                    "mean_error": round(sum(abs(v - requested) for v in read) / len(read), 4)}

    def compare(self, name: Any, *, seed: Any = 0, stage: Any = 1,
                context: Any = None) -> dict[str, Any]:
        """Return the base, stage ``stage`` and the last stage on the same noise (PNG URLs).

        A conditional last stage is drawn at ``context`` (unnamed parameters mid-range).
        """
        seed, _, values = self.check_request(name, seed, "flow", context)
        stages_count = len(Manifest.read(self.runs.resolve(name)).stages)
        stage = whole(stage, "stage", 1, stages_count)
        began = time.perf_counter()
        with self._lock:
            import torch

            from energyql.report import grid_png

            loaded = self.load(name)
            chain = loaded.artifact.sampler
            noise = loaded.sampler.noise(GRID, seed=seed)
            panels = []
            with torch.no_grad():
                shown = [("base", None)] + [(f"stage {k}", chain.stages[k - 1])
                                            for k in sorted({stage, len(chain.stages)})]
                for label, sampler in shown:
                    if sampler is None:
                        images = chain.root.decode(noise)
                    else:
                        context = sampler.context_tensor(values, GRID).to(noise.device) \
                            if sampler.context_params else None
                        images = sampler.decode(noise, context)
                    label += " (last)" if sampler is chain else ""
                    panels.append({"label": label, "grid": png_data_url(
                        grid_png(images.cpu(), scale=_scale(images)))})
        return {"panels": panels, "seconds": round(time.perf_counter() - began, 4)}

    def report(self, name: Any, kind: Any) -> Path:
        """Return the path of a run's report (``html`` or ``md``)."""
        if not isinstance(kind, str):
            raise UsageError("the report kind must be html or md")
        check_choice(kind, REPORTS, what="report kind")
        return self.runs.file(name, REPORTS[kind])


def slider_sweeps(metrics: RunMetrics) -> list[dict[str, Any]]:
    """Return what the page shows of each slider's sweep (``metrics.json``'s ``sliders``).

    One entry per slider: ``name``; ``cells``, the dist entries it sets (``"color = blue"``),
    empty for a weight slider, which has no requested share; ``predicates``, for a weight
    slider the predicates whose shares it moves (as the report tables them); and ``rows``, low
    to high, each with ``value``, ``requested``, ``judged``, ``truth``, ``predicate_share``,
    ``truth_predicate_share`` and ``ess_fraction``. Figures that are not finite numbers (a
    hand-edited file, a NaN) are None; rows without a finite value are left out.
    """
    sweeps = []
    for name, rows in list(metrics.sliders.items())[:MAX_SLIDERS]:
        kept = [row for row in rows if _finite(row.value) is not None][:MAX_SWEEP_ROWS]
        cells = _keys(row.requested for row in kept)
        predicates = [] if cells else [text for text in _keys(row.predicate_share
                                                              for row in kept)
                                       if text != "all"]
        sweeps.append({"name": str(name), "cells": cells, "predicates": predicates, "rows": [{
            "value": _finite(row.value),
            "requested": _pick(row.requested, cells),
            "judged": _pick(row.judged, cells),
            "truth": _pick(row.truth, cells),
            "predicate_share": _pick(row.predicate_share, predicates),
            "truth_predicate_share": _pick(row.truth_predicate_share, predicates),
            "ess_fraction": _finite(row.ess_fraction),
        } for row in kept]})
    return sweeps


def _keys(columns: Any) -> list[str]:
    """The keys of a column's mappings in order of first appearance (at most MAX_COLUMNS)."""
    return list(dict.fromkeys(str(k) for column in columns for k in column))[:MAX_COLUMNS]


def _pick(figures: Mapping[str, Any], keys: list[str]) -> dict[str, float | None]:
    return {key: _finite(figures.get(key)) for key in keys if key in figures}


def _finite(value: Any) -> float | None:
    """``value`` if it is a finite real number (JSON cannot carry NaN), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        return None
    return float(value)


def _scale(images: Any) -> int:
    """The grid scale ``energyql sample`` uses: small images doubled."""
    return 2 if images.shape[-1] <= 64 else 1


__all__ = ["GRID", "MAX_SEED", "PAGE_SAMPLERS", "Drawing", "Explorer", "number", "png_data_url",
           "slider_sweeps", "whole"]
