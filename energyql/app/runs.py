"""Which runs the explorer may show: folders under RUNS_DIR holding a manifest (torch-free).

Every run name that comes from the page is resolved here against RUNS_DIR and refused unless
it names a folder inside it: no ``..``, no absolute paths, no symlink that leads out, no
control characters. Names are POSIX paths relative to RUNS_DIR (``red-circles``,
``sweeps/pose``), as :func:`list_runs` returns them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from energyql.errors import ArtifactError, UsageError
from energyql.manifest import MANIFEST, Manifest

#: Longest run name the page may send (a path relative to RUNS_DIR).
MAX_NAME = 255
#: Deepest folder under RUNS_DIR that is searched for runs.
MAX_DEPTH = 4
#: Most runs listed (the newest first).
MAX_RUNS = 500
#: One path segment of a run name: what `energyql run --out runs/NAME` people write.
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}\Z")
#: The files of a run the page may hand out, by the name the page uses.
REPORTS = {"html": "report.html", "md": "report.md"}


class RunsDir:
    """Creates the guard over one runs folder: lists runs and resolves names inside it only.

    Arguments:
        root: RUNS_DIR; it must exist and be a folder (created by ``energyql serve`` if absent).
    """

    def __init__(self, root: str | os.PathLike[str]):
        path = Path(root)
        if not path.is_dir():
            raise UsageError(f"'{root}' is not a folder", hint="give the folder your runs are "
                             "in, e.g. energyql serve runs")
        self.root = path.resolve(strict=True)

    # -- names -----------------------------------------------------------------------------
    def _inside(self, path: Path) -> bool:
        try:
            return path.resolve(strict=True).is_relative_to(self.root)
        except (OSError, RuntimeError):  # missing, a symlink loop
            return False

    def check_name(self, name: Any, *, what: str = "run") -> list[str]:
        """Return the segments of a run name if it is a plain relative path (else UsageError)."""
        if not isinstance(name, str) or not name:
            raise UsageError(f"the {what} name is missing", hint="pick a run from the list")
        if len(name) > MAX_NAME:
            raise UsageError(f"the {what} name is {len(name):,} characters long, more than "
                             f"{MAX_NAME}", hint="pick a run from the list")
        parts = name.split("/")
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
            raise UsageError(f"the {what} name '{_shown(name)}' is an absolute path",
                             hint="run names are relative to the runs folder")
        if any(p in (".", "..") for p in parts):
            raise UsageError(f"the {what} name '{_shown(name)}' leaves the runs folder ('..')",
                             hint="run names are relative to the runs folder")
        if len(parts) > MAX_DEPTH or not all(_SEGMENT.match(p) for p in parts):
            raise UsageError(f"'{_shown(name)}' is not a {what} name",
                             hint="names are letters, digits, '_', '.', '+' and '-', folders "
                                  f"separated by '/', at most {MAX_DEPTH} deep")
        return parts

    def resolve(self, name: Any) -> Path:
        """Return the folder of the run ``name`` (inside RUNS_DIR, holding a manifest)."""
        self.check_name(name)
        path = self.root.joinpath(name)
        if not path.exists() and not path.is_symlink():
            raise UsageError(f"no run '{name}' in the runs folder", hint="pick a run from "
                             "the list (it shows every folder holding a manifest.json)")
        if not self._inside(path):
            raise UsageError(f"'{name}' leads out of the runs folder (a symlink)",
                             hint="only runs inside the runs folder are shown")
        real = path.resolve(strict=True)
        manifest = real / MANIFEST
        if not manifest.is_file() or not self._inside(manifest):
            raise UsageError(f"'{name}' is not a run: it has no {MANIFEST}",
                             hint="pick a run from the list")
        return real

    def file(self, name: Any, filename: str) -> Path:
        """Return a file of the run ``name`` (a regular file inside RUNS_DIR), else UsageError."""
        folder = self.resolve(name)
        path = folder / filename
        if not path.is_file() or not self._inside(path):
            raise UsageError(f"run '{name}' has no {filename}",
                             hint="runs trained with a report have one (energyql run writes it)")
        return path.resolve()

    def new_run(self, name: Any) -> Path:
        """Return the folder for a new run named ``name`` (one segment, not yet taken)."""
        parts = self.check_name(name, what="new run")
        if len(parts) != 1:
            raise UsageError(f"the new run name '{_shown(name)}' has a '/'",
                             hint="a new run is one folder directly in the runs folder")
        path = self.root / parts[0]
        if path.exists() or path.is_symlink():
            raise UsageError(f"a run or file named '{name}' already exists",
                             hint="choose another name")
        return path

    # -- listing ---------------------------------------------------------------------------
    def list(self) -> list[RunEntry]:
        """Return the runs under RUNS_DIR (folders holding a manifest), the newest first."""
        found: list[RunEntry] = []
        for folder, dirs, files in os.walk(self.root, followlinks=False):
            here = Path(folder)
            depth = len(here.relative_to(self.root).parts)
            # Symlinked folders are followed only where they stay inside RUNS_DIR.
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < MAX_DEPTH)
            for link in [d for d in dirs if (here / d).is_symlink()]:
                dirs.remove(link)
                target = here / link
                if self._inside(target) and (target / MANIFEST).is_file():
                    found.append(_entry(self.root, target))
            if depth and MANIFEST in files and self._inside(here / MANIFEST):
                found.append(_entry(self.root, here))
                dirs[:] = []  # a run's folder holds no further runs
            if len(found) >= MAX_RUNS:
                break
        found.sort(key=lambda e: (-e.modified, e.name))
        return found[:MAX_RUNS]


@dataclass(frozen=True)
class RunEntry:
    """One run in the list: its name, what it was trained on, or why it cannot be read."""

    name: str
    modified: float
    source: str = ""
    generator: str = ""
    stages: int = 0
    context: tuple[str, ...] = ()
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "generator": self.generator,
                "stages": self.stages, "context": list(self.context), "error": self.error}


def _entry(root: Path, folder: Path) -> RunEntry:
    name = folder.relative_to(root).as_posix()
    try:
        modified = (folder / MANIFEST).stat().st_mtime
    except OSError:
        modified = 0.0
    try:
        manifest = Manifest.read(folder)
    except ArtifactError as error:
        return RunEntry(name, modified, error=error.message)
    return RunEntry(name, modified, manifest.source, manifest.generator.id,
                    len(manifest.stages), tuple(c.name for c in manifest.stages[-1].context))


def _shown(text: str, limit: int = 60) -> str:
    """``text`` as safe to quote in a message: control characters escaped, cut to ``limit``."""
    from energyql.errors import escape_controls

    text = escape_controls(text.replace("\n", "\\n"))
    return text if len(text) <= limit else text[:limit - 1] + "…"


__all__ = ["MAX_DEPTH", "MAX_NAME", "MAX_RUNS", "REPORTS", "RunEntry", "RunsDir"]
