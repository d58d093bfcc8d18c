"""Pipeline folders from the Hugging Face Hub: where they live, how to fetch them (no torch).

A registry entry whose ``weights`` is ``"hf:OWNER/REPO"`` names a Hub repository holding a
saved pipeline (``model_index.json`` and one sub-folder per part). Its files go to one folder
of the energyql weights cache, ``$ENERGYQL_CACHE/hf/OWNER--REPO``; copying a pipeline folder
there (or fetching it with the ``hf`` command) is all it takes. A repository that holds more
than energyql loads (Stable Diffusion's carries checkpoints in several formats and precisions)
registers the files it needs with :func:`register_files`; fetching then takes only those.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from energyql.errors import WeightsMissingError

PREFIX = "hf:"

# Repositories fetched in part: ``hf:OWNER/REPO`` -> glob patterns of the files to fetch.
_FILES: dict[str, tuple[str, ...]] = {}


def register_files(weights: str, patterns: tuple[str, ...]) -> None:
    """Fetch only the files matching ``patterns`` (globs, e.g. ``"unet/*.json"``) of a repo."""
    _FILES[weights] = tuple(patterns)


def files(weights: str) -> tuple[str, ...]:
    """Return the file patterns fetched for ``hf:OWNER/REPO`` (empty: the whole repository)."""
    return _FILES.get(weights, ())


def repo_id(weights: str) -> str:
    """Return ``OWNER/REPO`` of an ``hf:OWNER/REPO`` weights key."""
    return weights.removeprefix(PREFIX)


def location(weights: str) -> Path:
    """Return the folder where the pipeline of ``hf:OWNER/REPO`` is expected."""
    from energyql import hub

    return hub.cache_dir() / "hf" / repo_id(weights).replace("/", "--")


def is_present(weights: str) -> bool:
    """Return whether the pipeline folder is in the cache (its ``model_index.json`` is)."""
    return (location(weights) / "model_index.json").is_file()


def fetch_command(weights: str) -> str:
    """Return a shell command that puts the pipeline where energyql looks for it."""
    include = "".join(f" --include {shlex.quote(p)}" for p in files(weights))
    return (f"hf download {shlex.quote(repo_id(weights))}{include} "
            f"--local-dir {shlex.quote(str(location(weights)))}")


def fetch(weights: str) -> Path:
    """Return the pipeline folder of ``hf:OWNER/REPO``, downloading it when allowed.

    Offline (``ENERGYQL_OFFLINE=1``, no network, or no ``huggingface_hub``) a missing folder
    raises :class:`WeightsMissingError` with the folder and the command that fetches it.
    """
    from energyql import hub

    folder = location(weights)
    hub.check_cache(folder)  # a file where the cache should be: say so, not "not found"
    if is_present(weights):
        return folder
    hint = (f"get it with: {fetch_command(weights)}  (or copy a save_pretrained folder there; "
            "set ENERGYQL_CACHE to move the cache)")
    if hub.offline():
        raise WeightsMissingError(
            f"pipeline '{repo_id(weights)}' is not at {folder}; downloads are off "
            "(ENERGYQL_OFFLINE)", hint=hint)
    failures: tuple[type[Exception], ...] = (ImportError, OSError, ValueError,
                                             *hub.transport_errors())
    try:
        from huggingface_hub import snapshot_download

        # The Hub client checks each large file against its recorded sha256 and writes
        # atomically; a half-fetched folder has no model_index.json check passing below.
        if files(weights):
            snapshot_download(repo_id(weights), local_dir=str(folder),
                              allow_patterns=list(files(weights)))
        else:
            snapshot_download(repo_id(weights), local_dir=str(folder))
    except failures as error:
        raise WeightsMissingError(
            f"pipeline '{repo_id(weights)}' is not at {folder} and could not be downloaded "
            f"({type(error).__name__})", hint=hint) from None
    if not is_present(weights):
        raise WeightsMissingError(f"'{folder}' has no model_index.json after the download",
                                  hint=hint)
    return folder
