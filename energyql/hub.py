"""Model weights: one cache directory, a table of known files, checked downloads.

Every weight file lives in one directory: ``$ENERGYQL_CACHE`` if set, else
``~/.cache/energyql``. :func:`path` returns a file's location, downloading it first when it is
missing and a URL is known (with a progress bar, a sha256 check where the digest is known, and
an atomic write: a temporary file that is renamed only once complete). Offline, or when
``ENERGYQL_OFFLINE=1``, a missing file raises :class:`~energyql.errors.WeightsMissingError`
naming the file, where it is expected and the command that fetches it.

This module does not import torch.

Example:
    >>> from energyql import hub
    >>> hub.location("stylegan2-ffhq").name
    'ffhq.pt'
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shlex
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from energyql.errors import DigestMismatchError, WeightsMissingError, did_you_mean
from energyql.io import sha256_file as file_digest  # the one sha256 of a file, kept by its name

__all__ = [
    "Weights", "KNOWN", "DigestMismatchError", "cache_dir", "location", "is_present", "path",
    "register", "download_file", "file_digest", "fetch_command", "transport_errors",
    "why_not_download",
]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Weights:
    """One known weight file.

    Arguments:
        key: the name used by registries and ``hub.path`` (e.g. ``"stylegan2-ffhq"``).
        filename: its file name in the cache directory.
        url: where it can be downloaded, or None when it must be placed by hand.
        sha256: its hex digest, or None when not known (then only its format is checked).
        description: what it is.
        source: who distributes it.
    """

    key: str
    filename: str
    url: str | None
    sha256: str | None = None
    description: str = ""
    source: str = ""


KNOWN: dict[str, Weights] = {}


def register(weights: Weights) -> None:
    """Add (or replace) an entry of the table of known weights."""
    KNOWN[weights.key] = weights


# PromptGen (Wu et al., NeurIPS 2022) distributes the StyleGAN2 generators it controls in the
# rosinality format. No sha256 digests are published for any of these files, so none are listed;
# downloads are checked to be PyTorch checkpoints instead (a broken link yields an HTML page).
_PROMPTGEN = "PromptGen (github.com/ChenWu98/Generative-Visual-Prompt), rosinality format"
for _key, _file, _url, _what in (
    ("stylegan2-ffhq", "ffhq.pt", "https://www.dropbox.com/s/iy0dkqnkx7uh2aq/ffhq.pt?dl=1",
     "StyleGAN2 config-f, FFHQ faces, 1024x1024"),
    ("stylegan2-metfaces", "metfaces.pt",
     "https://www.dropbox.com/s/lmjdijm8cfmu8h1/metfaces.pt?dl=1",
     "StyleGAN2-ADA, MetFaces portraits, 1024x1024"),
    ("stylegan2-afhqcat", "afhqcat.pt",
     "https://www.dropbox.com/s/z1vts069w683py5/afhqcat.pt?dl=1",
     "StyleGAN2-ADA, AFHQ cats, 512x512"),
    ("stylegan2-church", "stylegan2-church-config-f.pt",
     "https://www.dropbox.com/s/a0hvdun57nvafab/stylegan2-church-config-f.pt?dl=1",
     "StyleGAN2 config-f, LSUN church, 256x256"),
    ("stylegan2-car", "stylegan2-car-config-f.pt",
     "https://www.dropbox.com/s/x1d19u8zd6yegx9/stylegan2-car-config-f.pt?dl=1",
     "StyleGAN2 config-f, LSUN car, 512x384 in a 512x512 frame"),
    ("stylegan2-landscape", "landscape.pt",
     "https://www.dropbox.com/s/hli2x42ekdaz2br/landscape.pt?dl=1",
     "StyleGAN2, landscapes, 256x256"),
):
    register(Weights(_key, _file, _url, None, _what, _PROMPTGEN))

_FACENET = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
register(Weights("facenet-vggface2", "20180402-114759-vggface2.pt",
                 _FACENET + "20180402-114759-vggface2.pt", None,
                 "InceptionResnetV1 face embeddings trained on VGGFace2",
                 "facenet-pytorch release v2.2.9"))
register(Weights("facenet-casia", "20180408-102900-casia-webface.pt",
                 _FACENET + "20180408-102900-casia-webface.pt", None,
                 "InceptionResnetV1 face embeddings trained on CASIA-WebFace",
                 "facenet-pytorch release v2.2.9"))
register(Weights("fairface-res34", "res34_fair_align_multi_7_20190809.pt",
                 "https://www.dropbox.com/s/v1rp0uubk30esdh/res34_fair_align_multi_7_20190809.pt"
                 "?dl=1", None,
                 "FairFace ResNet-34 (18 outputs: 7 race, 2 gender, 9 age)",
                 "FairFace (github.com/dchen236/FairFace), mirrored by PromptGen"))


# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Return the weights directory: ``$ENERGYQL_CACHE``, else ``$XDG_CACHE_HOME/energyql``,
    else ``~/.cache/energyql``."""
    configured = os.environ.get("ENERGYQL_CACHE")
    if configured:
        return Path(configured).expanduser()
    # The XDG base-directory spec says an empty or relative XDG_CACHE_HOME is to be ignored.
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return root / "energyql"


def cache_problem(folder: Path | None = None) -> str | None:
    """Return why ``folder`` (default: the cache directory) cannot hold weights, or None.

    It, or a folder above it, may be a file; or it may exist but not be readable and
    searchable. A folder that does not exist yet is fine (downloads create it).
    """
    folder = cache_dir() if folder is None else folder
    for candidate in (folder, *folder.parents):
        try:
            exists = candidate.exists()
        except OSError as error:  # a folder above it cannot be searched
            return f"'{candidate}' cannot be read ({error.strerror or error})"
        if not exists:
            continue
        if not candidate.is_dir():
            return f"'{candidate}' is a file, not a folder"
        if candidate == folder and not os.access(candidate, os.R_OK | os.X_OK):
            return f"'{candidate}' cannot be read (permission denied)"
        return None
    return None


def check_cache(folder: Path | None = None) -> None:
    """Raise WeightsMissingError when the cache directory cannot hold weights."""
    problem = cache_problem(folder)
    if problem is not None:
        raise WeightsMissingError(
            f"the weights cache cannot be used: {problem}",
            hint="point ENERGYQL_CACHE at a folder you can read and write (it is created if "
                 "missing), or unset it to use ~/.cache/energyql")


def _entry(key: str) -> Weights:
    if key not in KNOWN:
        raise WeightsMissingError(f"unknown weights '{key}'", hint=did_you_mean(
            key, sorted(KNOWN), listing="known weights", limit=len(KNOWN)))
    return KNOWN[key]


def location(key: str) -> Path:
    """Return where the weights ``key`` are expected (whether or not they are there)."""
    return cache_dir() / _entry(key).filename


def is_present(key: str) -> bool:
    """Return whether the weights ``key`` are in the cache directory (no digest check)."""
    return location(key).is_file()


def fetch_command(key: str) -> str:
    """Return a shell command that puts the weights ``key`` where energyql looks for them."""
    entry, target = _entry(key), location(key)
    if not entry.url:
        return f"copy the file to {shlex.quote(str(target))}"
    return (f"mkdir -p {shlex.quote(str(target.parent))} && "
            f"curl -L -o {shlex.quote(str(target))} {shlex.quote(entry.url)}")


def offline() -> bool:
    return os.environ.get("ENERGYQL_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def why_not_download(download: bool = True) -> str | None:
    """Return why nothing may be downloaded ("downloads are off (...)"), or None if it may."""
    if not download:
        return "downloading was not allowed"
    if offline():
        return "downloads are off (ENERGYQL_OFFLINE)"
    return None


def transport_errors() -> tuple[type[Exception], ...]:
    """Return the network errors of huggingface_hub's HTTP client that are not OSErrors.

    huggingface_hub 0.x talks through requests, whose errors are OSErrors; 1.x through httpx
    and 2.x through httpx2, whose errors are not, and a few of them escape its downloads (a
    proxy error, a connection that keeps dropping mid-file).
    """
    errors = []
    for name in ("httpx", "httpx2"):
        try:
            client = importlib.import_module(name)
        except ImportError:
            continue
        if isinstance(getattr(client, "HTTPError", None), type):
            errors.append(client.HTTPError)
    return tuple(errors)


def path(key: str, *, download: bool = True, progress: bool = True) -> Path:
    """Return the local path of the weights ``key``, downloading them if missing.

    Raises :class:`WeightsMissingError` (naming the file, its expected location and the command
    that fetches it) when the file is missing and cannot be downloaded: ``download=False``,
    ``ENERGYQL_OFFLINE=1``, no URL known, or the network is unreachable.
    """
    entry, target = _entry(key), location(key)
    check_cache(target.parent)
    if target.is_file():
        return target
    how = fetch_command(key)
    url = entry.url
    why = why_not_download(download) if url else "no download URL is known"
    if why or not url:
        raise WeightsMissingError(
            f"weights '{key}' ({entry.filename}) are not at {target}; {why}",
            hint=f"get them with: {how}  (or set ENERGYQL_CACHE to the folder that holds them)")
    try:
        return download_file(url, target, sha256=entry.sha256, progress=progress,
                             label=entry.filename)
    except DigestMismatchError:
        raise
    except WeightsMissingError as error:
        raise WeightsMissingError(
            f"weights '{key}' ({entry.filename}) are not at {target} and could not be "
            f"downloaded: {error.message}",
            hint=f"get them with: {how}  (or set ENERGYQL_CACHE to the folder that holds them)",
        ) from None


def _looks_like_checkpoint(head: bytes) -> bool:
    # torch.save writes a zip archive (PK..) or, in the legacy format, a pickle (0x80 0x02).
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def download_file(url: str, target: str | Path, *, sha256: str | None = None, progress: bool = True,
             label: str | None = None, timeout: float = 30.0, check_format: bool = True) -> Path:
    """Download ``url`` to ``target`` atomically and return ``target``.

    The bytes go to a temporary file beside ``target`` that replaces it only when complete and
    checked (``sha256`` when given; otherwise, with ``check_format``, that it looks like a
    PyTorch checkpoint). On any failure the temporary file is removed and ``target`` is left as
    it was. Network failures raise :class:`WeightsMissingError`, a wrong digest
    :class:`DigestMismatchError`.
    """
    target = Path(target).expanduser()
    check_cache(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".partial")
    except OSError as error:
        raise WeightsMissingError(
            f"cannot write into the weights folder '{target.parent}': "
            f"{error.strerror or error}",
            hint="point ENERGYQL_CACHE at a folder you can write to") from None
    tmp = Path(tmp_name)
    done = False
    try:
        digest = hashlib.sha256()
        head = b""
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310
            except (urllib.error.URLError, OSError, ValueError) as error:
                reason = getattr(error, "reason", error)
                raise WeightsMissingError(f"cannot reach {url} ({reason})") from None
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                received = 0
                with _progress(progress, label or target.name, total) as advance:
                    while True:
                        try:
                            chunk = response.read(_CHUNK)
                        except (OSError, ValueError) as error:  # IncompleteRead, resets
                            raise WeightsMissingError(
                                f"download of {url} broke off after {received} bytes "
                                f"({type(error).__name__})") from None
                        if not chunk:
                            break
                        if not head:
                            head = chunk[:8]
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        advance(len(chunk))
            if total is not None and received != total:
                raise WeightsMissingError(
                    f"download of {url} broke off after {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise DigestMismatchError(
                f"downloaded {target.name} has sha256 {digest.hexdigest()}, expected {sha256}; "
                "the file was discarded",
                hint="the download was corrupted or the file changed upstream; try again, or "
                     "verify the source by hand")
        if sha256 is None and check_format and not _looks_like_checkpoint(head):
            raise WeightsMissingError(
                f"{url} did not return a PyTorch checkpoint (got {head[:8]!r}...); "
                "the link may have moved")
        os.replace(tmp, target)
        done = True
        return target
    finally:
        if not done:
            tmp.unlink(missing_ok=True)


class _NoProgress:
    def __enter__(self):
        return lambda n: None

    def __exit__(self, *exc):
        return False


class _RichProgress:
    def __init__(self, label: str, total: int | None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        # On stderr, so that a command's stdout stays clean for its results.
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=True)
        self.label, self.total = label, total

    def __enter__(self):
        self.progress.start()
        task = self.progress.add_task(f"downloading {self.label}", total=self.total)
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc):
        self.progress.stop()
        return False


def _progress(enabled: bool, label: str, total: int | None):
    return _RichProgress(label, total) if enabled else _NoProgress()
