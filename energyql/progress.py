"""Progress of long phases on stderr: a rich bar on a terminal, steady timestamped lines elsewhere.

One facility for every phase that may last more than a couple of seconds (λ fits, the
mass-covering start, training, evaluation, grids, sampling, benchmark items)::

    from energyql.progress import Progress

    progress = Progress(enabled=group.is_main)          # only rank 0 prints under torchrun
    with progress.phase("fitting λ on 4,096 samples") as p:
        fit = fit_constraints(...)
        p.note(ess=fit.ess)                             # figures shown on the closing line
    with progress.task("stage 1: training", total=800, unit="step", start=resumed) as t:
        for step in range(resumed, 800):
            ...
            t.update(step + 1, loss=loss, share=share)  # absolute count; figures by name

On a terminal the tasks share one rich progress display (nested phases, e.g. a λ refit during
training, show as a second line). Without one (piped, redirected, CI), each task prints a line
when it starts, then one line every ``interval`` seconds (from its updates, or from a heartbeat
thread while a phase computes without updating), and always a closing line with its duration
and last figures: a log a person can follow without one line per step.
``Progress(enabled=False)`` prints nothing. ``task`` and ``phase`` at module level use a
shared, enabled instance on stderr.

This module never imports torch.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

Figure = float | int | str

DEFAULT_INTERVAL = 5.0


def format_figure(value: Figure) -> str:
    """Return a figure as short text: 3 significant digits for floats, the rest as is."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}"


def format_figures(figures: dict[str, Figure], width: int | None = None) -> str:
    """Return ``name=value`` pairs separated by two spaces (names cut to ``width`` if given)."""
    return "  ".join(f"{name if width is None else name[:width]}={format_figure(value)}"
                     for name, value in figures.items())


def format_duration(seconds: float) -> str:
    """Return a duration as ``4.2s``, ``3m05s`` or ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Task:
    """One running phase: counts (when it has a total) and figures; made by ``Progress``."""

    def __init__(self, owner: Progress, description: str, total: int | None, unit: str,
                 start: int):
        self.owner = owner
        self.description = description
        self.total = total
        self.unit = unit
        self.start = start
        self.completed = start
        self.figures: dict[str, Figure] = {}
        self.started_at = owner.clock()
        self._last_line_at = self.started_at
        self._bar_id: TaskID | None = None

    # -- what callers use -------------------------------------------------------------------
    def update(self, completed: int | None = None, **figures: Figure) -> None:
        """Set the absolute count done (optional) and the latest figures."""
        if completed is not None:
            self.completed = completed
        self.figures.update(figures)
        self.owner._updated(self)

    def advance(self, by: int = 1, **figures: Figure) -> None:
        """Add ``by`` to the count done and set the latest figures."""
        self.update(self.completed + by, **figures)

    def note(self, **figures: Figure) -> None:
        """Set figures without changing the count (e.g. a phase's result for its last line)."""
        self.update(None, **figures)

    @property
    def elapsed(self) -> float:
        return self.owner.clock() - self.started_at

    # -- text of one plain line -------------------------------------------------------------
    def status_text(self, *, first: bool = False, final: bool = False) -> str:
        """Return this task's state as one line (no timestamp)."""
        parts = [self.description]
        if self.total is not None:
            share = self.completed / self.total if self.total else 1.0
            parts.append(f"{self.completed}/{self.total} {self.unit} ({share:.0%})")
        elif self.completed:
            parts.append(f"{self.completed} {self.unit}")
        elapsed = self.elapsed
        if final:
            parts.append(f"done in {format_duration(elapsed)}")
        elif first:
            parts.append("started")
        else:
            done = self.completed - self.start
            if done > 0 and elapsed > 0:
                rate = done / elapsed
                parts.append(f"{rate:.3g} {self.unit}/s")
                if self.total is not None and self.total > self.completed:
                    parts.append(f"eta {format_duration((self.total - self.completed) / rate)}")
            else:
                parts.append(f"{format_duration(elapsed)} so far")
        if self.figures:
            parts.append(format_figures(self.figures))
        return "  ".join(parts)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.owner._finished(self, failed=kind is not None)


class Progress:
    """Creates tasks and shows them on ``stream`` (default stderr), or nowhere when disabled.

    Arguments:
        enabled: False prints nothing (e.g. ``enabled=group.is_main`` under torchrun).
        stream: where to write; a terminal gets a rich bar, anything else plain lines.
        interval: seconds between two plain lines of one task (first and last always print).
        clock: seconds since the epoch, injectable for tests (``time.time`` by default).
        terminal: force the bar (True) or plain lines (False) instead of asking the stream.
        heartbeat: off a terminal, a background thread calls :meth:`tick` so that a phase
            with no updates (a λ fit, an evaluation) still prints a line every ``interval``.
    """

    def __init__(self, *, enabled: bool = True, stream: IO[str] | None = None,
                 interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.time,
                 terminal: bool | None = None, heartbeat: bool = True):
        self.enabled = enabled
        self._stream = stream
        self.interval = interval
        self.clock = clock
        self._terminal = terminal
        self._heartbeat = heartbeat
        # The shared rich display while at least one task runs on a terminal.
        self._bar: RichProgress | None = None
        self._running: list[Task] = []
        self._lock = threading.RLock()  # the heartbeat thread and the caller both print
        self._beating: threading.Event | None = None

    @property
    def stream(self) -> IO[str]:
        # Looked up late so that pytest's capture and redirections made after import apply.
        return self._stream if self._stream is not None else sys.stderr

    @property
    def on_terminal(self) -> bool:
        if self._terminal is not None:
            return self._terminal
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def task(self, description: str, total: int | None = None, *, unit: str = "step",
             start: int = 0) -> Task:
        """Return a task (use it as a context manager) counting ``total`` units from ``start``."""
        task = Task(self, description, total, unit, start)
        if self.enabled:
            with self._lock:
                self._running.append(task)
                if self.on_terminal:
                    self._add_bar(task)
                else:
                    self._line(task.status_text(first=True))
                    self._start_heartbeat()
        return task

    def tick(self) -> None:
        """Print a line for every running task that has been quiet for ``interval`` seconds."""
        with self._lock:
            if self._bar is not None:
                return
            now = self.clock()
            for task in list(self._running):
                if now - task._last_line_at >= self.interval:
                    task._last_line_at = now
                    self._line(task.status_text())

    def _start_heartbeat(self) -> None:
        if not self._heartbeat or self._beating is not None:
            return
        stop = self._beating = threading.Event()

        def beat() -> None:
            while not stop.wait(min(1.0, self.interval / 2)):
                self.tick()

        threading.Thread(target=beat, name="energyql-progress", daemon=True).start()

    def _stop_heartbeat(self) -> None:
        if self._beating is not None:
            self._beating.set()
            self._beating = None

    def phase(self, description: str) -> Task:
        """Return a task without a count, for a phase shown only as running and then done."""
        return self.task(description, None, unit="")

    def line(self, text: str) -> None:
        """Print one message in the progress stream (above the bar on a terminal)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            self._line(text)

    # -- plain lines --------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        stamp = datetime.fromtimestamp(self.clock()).strftime("%Y-%m-%d %H:%M:%S")
        self.stream.write(f"{stamp}  {text}\n")
        self.stream.flush()

    # -- rich bar -----------------------------------------------------------------------------
    def _add_bar(self, task: Task) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        if self._bar is None:
            console = Console(file=self.stream, force_terminal=True, stderr=self._stream is None)
            self._bar = RichProgress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                                     BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     TextColumn("eta"), TimeRemainingColumn(),
                                     TextColumn("{task.fields[figures]}"), console=console,
                                     transient=False)
            self._bar.start()
        task._bar_id = self._bar.add_task(task.description, total=task.total,
                                          completed=task.completed, figures="")

    def _updated(self, task: Task) -> None:
        with self._lock:
            self._update_locked(task)

    def _update_locked(self, task: Task) -> None:
        if not self.enabled or task not in self._running:
            return
        if self._bar is not None and task._bar_id is not None:
            self._bar.update(task._bar_id, completed=task.completed,
                             figures=format_figures(task.figures, width=28))
            return
        if task.total is not None and task.completed >= task.total:
            return  # its closing line follows
        now = self.clock()
        if now - task._last_line_at >= self.interval:
            task._last_line_at = now
            self._line(task.status_text())

    def _finished(self, task: Task, *, failed: bool) -> None:
        with self._lock:
            self._finish_locked(task, failed)

    def _finish_locked(self, task: Task, failed: bool) -> None:
        if not self.enabled or task not in self._running:
            return
        self._running.remove(task)
        if not self._running:
            self._stop_heartbeat()
        if self._bar is not None and task._bar_id is not None:
            if task.total is None:
                # A phase's spinner becomes a finished line; its figures stay visible.
                self._bar.update(task._bar_id, total=1, completed=1,
                                 figures=format_figures(task.figures, width=28))
            if not self._running:
                self._bar.stop()
                self._bar = None
            return
        text = task.status_text(final=True)
        self._line(f"{text}  (stopped by an error)" if failed else text)


_shared = Progress()


def task(description: str, total: int | None = None, *, unit: str = "step",
         start: int = 0) -> Task:
    """Return a task on the shared stderr progress (see ``Progress.task``)."""
    return _shared.task(description, total, unit=unit, start=start)


def phase(description: str) -> Task:
    """Return a count-less task on the shared stderr progress (see ``Progress.phase``)."""
    return _shared.phase(description)


__all__ = ["Progress", "Task", "format_duration", "format_figures", "phase", "task"]
