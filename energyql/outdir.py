"""A run's output folder, claimed before the first training step.

:func:`claim` checks everything that would otherwise fail only after training (the folder can
be created and written to, has room, is not another run's or a folder of unrelated files),
takes a lock (an ``flock`` on a lock file) so that a second run on the same folder fails fast,
and removes the temporary files a killed run left behind. A lock file whose process is gone
is taken over, by exactly one run when several try at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from energyql.errors import ArtifactError
from energyql.io import STAGED, TEMP, is_system_path, remove_stale_temps

LOCK = ".energyql.lock"
#: Free space a run needs at the least (checkpoints, flows, grids and report of a small run).
MIN_FREE_BYTES = 64 << 20
# What energyql itself writes into an output folder: anything else makes it "not ours".
_OURS = re.compile(
    r"(manifest\.json|flows\.safetensors|metrics\.json|report\.(md|html)|samples\.png|base\.png"
    r"|curves\.png|hist_[^/]*\.png|stage\d+\.png|log\.jsonl|stage\d+\.(ckpt\.safetensors|optim\.pt))"
    rf"({re.escape(STAGED)})?|\..*{re.escape(TEMP)}|{re.escape(LOCK)}(\..*)?")


def _fail(message: str, hint: str) -> ArtifactError:
    return ArtifactError(message, hint=hint)


def foreign_entries(folder: Path) -> list[str]:
    """Return the names in ``folder`` that energyql did not write (sorted)."""
    return sorted(e.name for e in folder.iterdir() if not _OURS.fullmatch(e.name))


def check_folder(folder: Path, *, force: bool = False) -> None:
    """Refuse an output folder that cannot hold a run, before any work starts."""
    if str(folder).strip() == "":
        raise _fail("the output folder is empty text", "give a folder to write to, e.g. "
                    "--out runs/mine")
    if is_system_path(folder):
        raise _fail(f"'{folder}' is a system folder, not a place for a run's output",
                    "give a folder of your own, e.g. --out runs/mine")
    if folder.exists() and not folder.is_dir():
        raise _fail(f"'{folder}' is an existing file, not a folder",
                    "give a new folder or an artifact folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _fail(f"cannot create the output folder '{folder}': "
                    f"{error.strerror or error}", "choose a folder you can write to") from None
    if not force and not (folder / "manifest.json").is_file():
        foreign = foreign_entries(folder)
        if foreign:
            shown = ", ".join(f"'{n}'" for n in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise _fail(f"'{folder}' is not empty and is not an energyql artifact (it holds "
                        f"{shown})", "choose a new folder, or pass --force to write into it")
    _check_writable(folder)


def _check_writable(folder: Path, need: int = MIN_FREE_BYTES) -> None:
    """Write and remove a probe file, and check the free space (read-only or full: refused)."""
    probe = folder / f".energyql-probe-{os.getpid()}{TEMP}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        raise _fail(f"cannot write into '{folder}': {error.strerror or error}",
                    "free some space on that file system" if full
                    else "choose a folder you can write to") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    free = shutil.disk_usage(folder).free
    if free < need:
        raise _fail(f"'{folder}' has only {free >> 20} MiB free; a run needs at least "
                    f"{need >> 20} MiB", "free some space, or choose another --out")


def _owner(lock: Path) -> tuple[int, str] | None:
    """Return (pid, host) recorded in a lock file, or None when it is unreadable."""
    try:
        pid, host = lock.read_text(encoding="utf-8").split()[:2]
        return int(pid), host
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _in_use(folder: Path, lock: Path, owner: tuple[int, str] | None) -> ArtifactError:
    if owner is None:
        who = "another process"
    else:
        where = "" if owner[1] == socket.gethostname() else f" on {owner[1]}"
        who = f"process {owner[0]}{where}"
    return _fail(f"'{folder}' is in use by another energyql run ({who})",
                 f"wait for it to finish or choose another --out; if that run is gone, "
                 f"delete {lock}")


def _take_lock(folder: Path) -> tuple[Path, int]:
    """Lock ``folder`` for this process; return the lock file and its open descriptor.

    The lock is an exclusive ``flock`` on ``.energyql.lock``, held while the descriptor is
    open: the kernel drops it when the process ends, however it ends, so a killed run leaves
    no lock behind, and of several runs taking over a stale lock file at the same moment
    exactly one gets it (the kernel decides; there is no read-then-replace window, which the
    earlier pid-file scheme had). The file also records "pid host" for messages, and a lock
    file naming another host is respected (a network file system may not share locks).
    """
    lock = folder / LOCK
    record = f"{os.getpid()} {socket.gethostname()}\n".encode()
    for _ in range(8):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise _fail(f"cannot write into '{folder}': {error.strerror or error}",
                        "choose a folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _in_use(folder, lock, _owner(lock)) from None
            raise _fail(f"cannot lock '{lock}': {error.strerror or error}",
                        "choose a folder on a file system that supports locks") from None
        try:
            # The holder before us may have removed the file after we opened it: then our
            # lock is on a file no one else will open. Only the file at the path counts.
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        owner = _owner(lock)
        if owner is not None and owner[1] != socket.gethostname():
            os.close(fd)
            raise _in_use(folder, lock, owner)
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        return lock, fd
    raise _fail(f"cannot take the lock of '{folder}'", f"delete {lock} if no run uses the folder")


@contextlib.contextmanager
def claim(folder: str | os.PathLike, *, force: bool = False, enabled: bool = True
          ) -> Iterator[Path]:
    """Check ``folder``, lock it for this run and clean a killed run's temporary files.

    Arguments:
        force: write into a non-empty folder that is not an energyql artifact.
        enabled: False on all but the first process of a torchrun job (it alone writes).
    """
    folder = Path(folder)
    if not enabled:
        yield folder
        return
    created = not folder.exists()
    check_folder(folder, force=force)
    lock, fd = _take_lock(folder)
    try:
        remove_stale_temps(folder)
        yield folder
    finally:
        # Removed while still locked, then released: a run waiting on the old file sees
        # that it is gone and locks the new one (see _take_lock).
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)
        if created:
            # A run that failed before writing anything leaves no folder behind.
            with contextlib.suppress(OSError):
                folder.rmdir()


__all__ = ["LOCK", "check_folder", "claim", "foreign_entries"]
