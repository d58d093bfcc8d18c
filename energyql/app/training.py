"""Training from the page: one run at a time, in a thread, with progress and cancel.

The run goes through :func:`energyql.train` with ``out=`` and ``on_step=``, exactly as
``energyql run`` does: the output folder is claimed and locked, the artifact is committed as
a whole at the end. Cancel sets a flag that the ``on_step`` callback turns into an exception
at the next step, before anything is committed; the half-trained folder (checkpoints, log) is
then removed, since the page created it.
"""

from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from energyql.app.explorer import whole
from energyql.app.runs import RunsDir
from energyql.errors import EnergyQLError, UsageError, check_choice
from energyql.manifest import MAX_BLOCKS, MAX_WIDTH
from energyql.options import MAX_BATCH, MAX_SAMPLES, MAX_STEPS, MIN_REPORT_SAMPLES
from energyql.progress import Progress, Task

#: Points kept of the live curve (older ones are thinned out, every other one dropped).
MAX_CURVE = 2000
#: Longest expression the page accepts (the text box; the CLI has no such box).
MAX_EXPRESSION = 4000


class Cancelled(EnergyQLError):
    """Raised from ``on_step`` when the page asked the training to stop."""


class _Watch(Progress):
    """Progress that prints nothing and remembers the phases and figures for the page."""

    def __init__(self, changed: Callable[[], None]):
        super().__init__(enabled=False)
        self.tasks: list[Task] = []
        self._changed = changed

    def task(self, description: str, total: int | None = None, *, unit: str = "step",
             start: int = 0) -> Task:
        made = super().task(description, total, unit=unit, start=start)
        self.tasks.append(made)
        del self.tasks[:-8]  # the current phase and a few before it
        self._changed()
        return made

    @property
    def current(self) -> str:
        """The description of the phase started last (λ fit, training, evaluation, ...)."""
        return self.tasks[-1].description if self.tasks else "starting"

    def training_figures(self) -> dict[str, float]:
        """The latest figures of the running training task (share on target, KLs)."""
        for task in reversed(self.tasks):
            if task.total is not None and task.unit == "step":
                return {k: float(v) for k, v in task.figures.items()
                        if isinstance(v, (int, float)) and k != "loss"}
        return {}


def trainable_generators() -> list[str]:
    """The generators the page can train on: those of the embedded worlds (no download)."""
    from energyql.worlds import registered

    return sorted(g.name for w in registered().values() for g in w.generators)


class Trainings:
    """Creates the page's training slot: at most one run at a time.

    Arguments:
        runs: the runs folder new runs are written into.
        train: the training entry point (:func:`energyql.train`; tests may wrap it).
        threads: torch CPU threads for the run.
    """

    def __init__(self, runs: RunsDir, *, train: Callable[..., Any] | None = None,
                 threads: int | None = None):
        self.runs = runs
        self._train = train
        self.threads = threads
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {"state": "idle"}
        self._watch: _Watch | None = None

    # -- requests --------------------------------------------------------------------------
    def settings(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Return the checked settings of a training request (UsageError/ExpressionError)."""
        from energyql.lang.api import compile as compile_program
        from energyql.workflow import train_config

        if not isinstance(request, Mapping):
            raise UsageError("a training request is a JSON object")
        expr = request.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            raise UsageError("the expression is empty", hint="write one, e.g. color == red")
        if len(expr) > MAX_EXPRESSION:
            raise UsageError(f"the expression is {len(expr):,} characters long, more than "
                             f"{MAX_EXPRESSION:,}", hint="shorten it, or use energyql run")
        gen = request.get("gen")
        check_choice(gen if isinstance(gen, str) else repr(gen), trainable_generators(),
                     what="generator the page trains on")
        out = self.runs.new_run(request.get("name"))
        program = compile_program(expr, gen=gen)  # an expression error, with its caret
        settings: dict[str, Any] = {
            "steps": whole(request.get("steps", 200), "steps", 1, MAX_STEPS),
            "batch": whole(request.get("batch", 64), "batch", 1, MAX_BATCH),
            "seed": whole(request.get("seed", 0), "seed", 0, 2**63 - 1),
        }
        # Optional flow and fit sizes (small runs: tests, quick looks), bounded as a manifest
        # bounds them (the artifact must load again) and as energyql.train bounds samples.
        for name, low, high in (("blocks", 1, MAX_BLOCKS), ("width", 1, MAX_WIDTH),
                                ("moment_samples", 1, MAX_SAMPLES),
                                ("refit_samples", 1, MAX_SAMPLES),
                                ("closeness_samples", 0, MAX_SAMPLES),
                                ("warm_start_samples", 0, MAX_SAMPLES),
                                ("refit_every", 0, MAX_STEPS)):
            if request.get(name) is not None:
                settings[name] = whole(request[name], name, low, high)
        if self.threads is not None:
            settings["threads"] = self.threads
        train_config(gen, **settings)  # every value checked as energyql.train checks it
        report = request.get("report", True)
        if not isinstance(report, bool):
            raise UsageError("report must be true or false")
        samples = whole(request.get("samples", 2000), "samples", MIN_REPORT_SAMPLES,
                        MAX_SAMPLES)
        return {"program": program, "expr": expr, "gen": gen, "out": out, "report": report,
                "samples": samples, "settings": settings}

    def start(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Start a training; refused (UsageError) while another runs or if the request is bad."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise UsageError(f"a training is already running ('{self._state.get('run')}')",
                                 hint="wait for it to finish, or cancel it")
            checked = self.settings(request)
            self._cancel.clear()
            self._watch = _Watch(lambda: None)
            self._state = {"state": "running", "run": checked["out"].name,
                           "expr": checked["expr"], "gen": checked["gen"],
                           "steps": checked["settings"]["steps"],
                           "stages": len(checked["program"].stages), "stage": 0, "step": 0,
                           "loss": None, "figures": {}, "curve": [], "message": "",
                           "started": time.time(), "seconds": 0.0}
            self._thread = threading.Thread(target=self._run, args=(checked,),
                                            name="energyql-serve-training", daemon=True)
            self._thread.start()
            return self.status()

    def cancel(self) -> dict[str, Any]:
        """Ask the running training to stop at its next step."""
        with self._lock:
            if self._state.get("state") != "running":
                raise UsageError("no training is running")
            self._cancel.set()
            self._state["message"] = "stopping at the next step"
            return self.status()

    def status(self) -> dict[str, Any]:
        """Return where the training stands (for the page's progress panel)."""
        state = dict(self._state)
        state["curve"] = list(state.get("curve", []))
        if self._watch is not None and state.get("state") == "running":
            state["phase"] = self._watch.current
            state["seconds"] = round(time.time() - state["started"], 1)
        state["cancelling"] = self._cancel.is_set() and state.get("state") == "running"
        return state

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running training to end; return True if none is running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    # -- the thread ------------------------------------------------------------------------
    def _on_step(self, info: Any) -> None:
        if self._cancel.is_set():
            raise Cancelled(f"cancelled at step {info.step} of stage {info.stage}")
        watch = self._watch
        figures = watch.training_figures() if watch is not None else {}
        loss = info.loss if math.isfinite(info.loss) else None
        point = {"stage": info.stage, "step": info.step, "loss": loss, **figures}
        curve = self._state["curve"]
        curve.append(point)
        if len(curve) > MAX_CURVE:
            del curve[::2]
        self._state.update(stage=info.stage, step=info.step, steps=info.steps, loss=loss,
                           figures=figures)

    def _run(self, checked: dict[str, Any]) -> None:
        out: Path = checked["out"]
        from energyql.api import train as library_train

        train = self._train or library_train
        try:
            train(checked["program"], gen=checked["gen"], out=out, report=checked["report"],
                  samples=checked["samples"],
                  progress=self._watch if self._watch is not None else False,
                  on_step=self._on_step,
                  **checked["settings"])
        except Cancelled as stop:
            self._finish("cancelled", stop.message)
            # The page made this folder and nothing was committed in it: no half run is left.
            if not (out / "manifest.json").exists():
                shutil.rmtree(out, ignore_errors=True)
        except EnergyQLError as error:
            self._finish("failed", str(error))
        except Exception as error:  # a bug must not kill the server; the page says so
            self._finish("failed", f"{type(error).__name__}: {error}")
        else:
            self._finish("finished", f"run '{out.name}' is ready to explore")

    def _finish(self, state: str, message: str) -> None:
        with self._lock:
            self._state.update(state=state, message=message,
                               seconds=round(time.time() - self._state["started"], 1))
            if self._watch is not None:
                self._state["phase"] = self._watch.current
            self._cancel.clear()


__all__ = ["MAX_EXPRESSION", "Cancelled", "Trainings", "trainable_generators"]
