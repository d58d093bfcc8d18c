"""A run's ``log.jsonl`` (one strict JSON object per line) and the ``curves.png`` drawn from it.

Records, each a JSON object on its own line, appended and flushed as they come so that a
killed run loses at most its last line:

- ``{"event": "step", "stage": 1, "step": 12, "seconds": 3.2, "loss": 1.8,
  "parts": {"color == red": 0.4, ...}, "figures": {"on-target share": 0.61, ...}}``:
  one per training step; ``parts`` are the loss's terms, ``figures`` the stage's target
  figures (the share meeting its predicates, KL of each constraint to its target).
- ``{"event": "fit", "stage": 1, "step": 50, "lambda": {...}, "shares": {...}, "ess": 812}``:
  one per λ fit or refit.
- any other ``event`` name a caller needs (e.g. ``"stage_end"``), with its own fields.

Numbers that are not finite (NaN, ±inf) are written as ``null``: the file stays strict JSON.
Reopening the log of a resumed run continues the file: a record whose (event, stage, step) is
already there is skipped, and a half-written last line left by a kill is cut off first.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from energyql.errors import ArtifactError

LOG_NAME = "log.jsonl"
CURVES_NAME = "curves.png"


def strict(value: Any) -> Any:
    """Return ``value`` with every non-finite float replaced by None (and tensors as numbers)."""
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return strict(value.tolist())  # a tensor or numpy value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_log(path: str | os.PathLike) -> list[dict]:
    """Return the records of a ``log.jsonl`` (a half-written last line is ignored)."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the write was interrupted
                break
            raise ArtifactError(f"line {number} of '{path}' is not JSON",
                                hint="the log was edited or damaged; delete the line or the "
                                     "file to let the run write a fresh one") from None
    return records


def _key(record: dict) -> tuple:
    return record.get("event", "step"), record.get("stage"), record.get("step")


class RunLog:
    """Appends records to ``log.jsonl``; reopening continues it without duplicating steps.

    Arguments:
        path: the log file, or a run directory (then ``<dir>/log.jsonl``).
        enabled: False writes nothing (e.g. ``enabled=group.is_main`` under torchrun).
        clock: seconds, for each record's ``seconds`` since the log was opened (tests inject).
    """

    def __init__(self, path: str | os.PathLike, *, enabled: bool = True, clock=time.monotonic):
        path = Path(path)
        self.path = path / LOG_NAME if path.suffix != ".jsonl" else path
        self.enabled = enabled
        self.clock = clock
        self._opened_at = clock()
        self._seen: set[tuple] = set()
        self._handle = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._cut_partial_last_line()
            self._seen = {_key(r) for r in read_log(self.path)}
            # Held open for the run's life (closed by close() or the with block).
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def _cut_partial_last_line(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def write(self, event: str = "step", *, stage: int, step: int, **fields: Any) -> bool:
        """Append one record (flushed at once); return False if it was already logged."""
        if not self.enabled:
            return False
        key = (event, stage, step)
        if key in self._seen:
            return False
        if self._handle is None:
            raise ValueError(f"the run log {self.path} is closed")
        self._seen.add(key)
        record = {"event": event, "stage": stage, "step": step, **strict(fields)}
        record.setdefault("seconds", round(self.clock() - self._opened_at, 3))
        self._handle.write(json.dumps(record, allow_nan=False, ensure_ascii=False) + "\n")
        self._handle.flush()
        return True

    def step(self, *, stage: int, step: int, loss: float, parts: dict | None = None,
             figures: dict | None = None, **fields: Any) -> bool:
        """Append a training step's loss, the loss's parts and the stage's target figures."""
        return self.write("step", stage=stage, step=step, loss=loss, parts=parts or {},
                          figures=figures or {}, **fields)

    def fit(self, *, stage: int, step: int, lam: dict | None = None, shares: dict | None = None,
            **fields: Any) -> bool:
        """Append a λ (re)fit: the multipliers, the shares they reached and other figures."""
        return self.write("fit", stage=stage, step=step, **{"lambda": lam or {}},
                          shares=shares or {}, **fields)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _series(records: list[dict], field: str) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        for name, value in (record.get(field) or {}).items():
            if isinstance(value, (int, float)) and value is not None:
                series.setdefault(name, []).append((record["step"], float(value)))
    return series


def curve_panels(records: list[dict]) -> list:
    """Return the chart images of a log: per stage, the loss and its target figures by step."""
    from energyql.charts import line_chart

    panels = []
    stages = sorted({r["stage"] for r in records if r.get("event", "step") == "step"})
    for stage in stages:
        steps = [r for r in records if r.get("event", "step") == "step" and r["stage"] == stage]
        loss = [(r["step"], float(r["loss"])) for r in steps if r.get("loss") is not None]
        panels.append(line_chart(f"stage {stage}: loss", {"loss": loss}, y_label="loss"))
        figures = _series(steps, "figures")
        fits = [r for r in records if r.get("event") == "fit" and r["stage"] == stage]
        if not figures and fits:
            figures = {f"share {k}": v for k, v in _series(fits, "shares").items()}
        panels.append(line_chart(f"stage {stage}: target figures", figures or {"(none)": []},
                                 y_label="value"))
    return panels


def write_curves(log: str | os.PathLike | list[dict], path: str | os.PathLike) -> Path | None:
    """Draw ``curves.png`` from a log (file, run directory or records); None if it is empty."""
    from energyql.charts import png_bytes, stack
    from energyql.io import write_bytes

    records = log if isinstance(log, list) else read_log(log)
    panels = curve_panels(records)
    if not panels:
        return None
    return write_bytes(path, png_bytes(stack(panels, columns=2)))


__all__ = [
    "CURVES_NAME",
    "LOG_NAME",
    "RunLog",
    "curve_panels",
    "read_log",
    "strict",
    "write_curves",
]
