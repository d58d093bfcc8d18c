"""Files written and read safely.

Writes are atomic (a file is either the old one or the complete new one, never partial), and
a payload and the file that points at it are committed in one step (:func:`commit`). Reads
treat every file as hostile: :func:`read_safetensors` and :func:`load_torch_file` check sizes
against bounds and against the bytes actually present before anything is allocated, and turn
every failure into an :class:`~energyql.errors.EnergyQLError` naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import struct
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from energyql.errors import CheckpointError, EnergyQLError, OutputError, UnsafePickleError

#: Suffix of a payload staged by :func:`commit` before the file pointing at it is committed.
STAGED = ".next"
#: Suffix of the temporary files :func:`atomic_write` makes (a kill can leave one behind).
TEMP = ".tmp"
# Generator and weights files never live here; a path into them is a trick, not a file.
SYSTEM_DIRS = ("/dev", "/proc", "/sys", "/etc", "/boot", "/run")
# A safetensors header is JSON describing the tensors; real ones are a few KiB to a few MiB.
MAX_HEADER_BYTES = 16 << 20
MAX_TENSOR_DIMS = 8
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
                "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8,
                "F64": 8}


def check_output_file(path: str | os.PathLike[str]) -> None:
    """Refuse to write over ``path`` when it exists and is not a regular file.

    Replacing a device node, a FIFO or a socket with a regular file (what an atomic rename
    does) would silently break whatever uses it (a ``/dev/null`` copy, a named pipe); a folder
    cannot be replaced at all. Raises :class:`~energyql.errors.OutputError`.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        blocker = _existing_file(Path(path).parent)
        why = f"'{blocker}' is a file, not a folder" if blocker else error.strerror or error
        raise OutputError(f"cannot write '{path}': {why}",
                          hint="choose a file you can write to") from None
    if stat.S_ISDIR(mode):
        raise OutputError(f"cannot write '{path}': it is a folder",
                          hint=f"give a file name, e.g. {Path(path) / 'out'}")
    if not stat.S_ISREG(mode):
        raise OutputError(f"refusing to replace '{path}': it is not a regular file (a device, "
                          "FIFO or socket)", hint="give the path of a regular file to write")


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file over ``path`` in one step.

    An existing ``path`` that is not a regular file is refused, and a folder that cannot be
    created or written to is an :class:`~energyql.errors.OutputError` naming ``path`` (never a
    bare ``OSError``).
    """
    path = Path(path)
    check_output_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        folder = path.parent
        why = (f"'{_existing_file(folder)}' is a file, not a folder"
               if _existing_file(folder) else error.strerror or str(error))
        raise OutputError(f"cannot write '{path}': {why}",
                          hint="choose a folder you can write to") from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; ours are ordinary outputs
        check_output_file(path)  # it may have appeared while the file was written
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise OutputError(f"cannot write '{path}': {error.strerror or error}",
                              hint="check the free space and permissions there") from None
        raise
    return path


def _existing_file(folder: Path) -> Path | None:
    """Return the first ancestor of ``folder`` (itself included) that exists as a non-folder."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    return atomic_write(path, write)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def dumps_strict(data: Any, *, what: str, indent: int | None = 2) -> str:
    """Return ``data`` as strict JSON; a NaN or infinity in it is an EnergyQLError."""
    from energyql.errors import EnergyQLError

    try:
        return json.dumps(data, indent=indent, allow_nan=False)
    except ValueError:
        raise EnergyQLError(f"{what} holds a non-finite number (NaN or infinity), which JSON "
                            "cannot carry",
                            hint="a training or evaluation figure diverged; check the run's "
                                 "log for non-finite losses") from None


def loads_strict(text: str | bytes) -> Any:
    """Return the value of strict JSON text: ``NaN``, ``Infinity`` and ``-Infinity`` (which
    Python's json reads by default) are a ValueError, like any other invalid JSON."""
    return json.loads(text, parse_constant=_no_constant)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as strict JSON (no NaN or infinity), atomically."""
    return write_text(path, dumps_strict(data, what=str(path)) + "\n")


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, Any],
                 metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically (tensors are made contiguous CPU copies)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Return the sha256 hex digest of a file, read in chunks (the one place it is computed:
    weights digests, downloads, artifact commit points)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def is_system_path(path: str | os.PathLike[str]) -> bool:
    """Return whether ``path`` (as written, and once links are followed) lies in a system folder."""
    text = str(path).replace("\\", "/")
    candidates = [text]
    try:
        candidates.append(str(Path(text).expanduser().resolve()))
    except (OSError, RuntimeError):  # a link loop: not a file anyone should read
        return True
    return any(c == d or c.startswith(d + "/") for c in candidates for d in SYSTEM_DIRS)


def climbs_out(path: str) -> bool:
    """Return whether a relative path climbs out of its folder with '..'."""
    return ".." in PurePosixPath(path.replace("\\", "/")).parts


# --- one payload and the file pointing at it, committed together --------------------------------

def staged(path: str | os.PathLike[str]) -> Path:
    """Return where :func:`commit` stages the next version of ``path``."""
    path = Path(path)
    return path.with_name(path.name + STAGED)


def settle(payload: str | os.PathLike[str], committed_digest: str | None) -> None:
    """Finish or undo a commit a kill interrupted: promote the staged payload if the pointer
    already names it, else drop it (it never became part of anything)."""
    candidate = staged(payload)
    if not candidate.is_file():
        return
    if committed_digest and sha256_file(candidate) == committed_digest:
        os.replace(candidate, payload)
    else:
        candidate.unlink()


def commit(payload: str | os.PathLike[str], write_payload: Callable[[str], None],
           write_pointer: Callable[[str], None], *, committed_digest: str | None = None) -> str:
    """Write a payload and the pointer file that records its digest; return the digest.

    The payload is staged beside its final name, then the pointer is written atomically (the
    commit point: it records the payload's sha256), then the payload takes its final name. A
    kill at any point leaves the old pair or the new pair, which :func:`committed_file` finds
    by digest; ``committed_digest`` (what the current pointer records) lets an interrupted
    earlier commit be settled first.
    """
    payload = Path(payload)
    settle(payload, committed_digest)
    staging = staged(payload)
    atomic_write(staging, write_payload)
    digest = sha256_file(staging)
    write_pointer(digest)
    os.replace(staging, payload)
    return digest


def committed_file(payload: str | os.PathLike[str], digest: str | None) -> Path | None:
    """Return the file holding the payload a pointer names by ``digest`` (its final or staged
    name), ``payload`` itself when no digest is recorded, or None when neither matches."""
    payload = Path(payload)
    if not digest:
        return payload if payload.is_file() else None
    for candidate in (payload, staged(payload)):
        try:
            if candidate.is_file() and sha256_file(candidate) == digest:
                return candidate
        except OSError:  # renamed away by a writer between the two calls
            continue
    return None


def remove_stale_temps(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files a killed write left in ``directory``; return them.

    Only call this while holding the folder's lock: a live writer's temp file looks the same.
    """
    removed = []
    for entry in Path(directory).glob(f".*{TEMP}"):
        if entry.is_file() and not entry.is_symlink():
            entry.unlink()
            removed.append(entry)
    return removed


# --- safetensors, read as if an attacker wrote them -----------------------------------------------

class _FileFault:
    """Raises ``error`` with ``file: problem`` (and the field when one is named)."""

    def __init__(self, path: Path, error: type[EnergyQLError], hint: str):
        self.path, self.error, self.hint = path, error, hint

    def __call__(self, problem: str, field: str | None = None) -> NoReturn:
        where = (f"{self.path}: tensor '{field}'" if field is not None
                 else f"{self.path} cannot be read:")
        raise self.error(f"{where} {problem}", hint=self.hint)


def read_safetensors(path: str | os.PathLike[str], *, max_bytes: int,
                     expected: Mapping[str, tuple[tuple[int, ...], str]] | None = None,
                     error: type[EnergyQLError] = CheckpointError,
                     hint: str = "the file is damaged or was not written by energyql",
                     digest: str | None = None, device: str = "cpu",
                     ) -> tuple[dict[str, Any], dict[str, str]]:
    """Return ``(tensors, metadata)`` of a safetensors file checked before anything is built.

    The header is parsed here first: every tensor's dtype, shape and byte range must be sane
    and lie inside the bytes actually present, the whole file within ``max_bytes``; with
    ``expected`` (name -> (shape, safetensors dtype)) the names, shapes and dtypes must match
    exactly, and floating-point values must be finite. With ``digest`` the file's sha256 must
    match. Every failure is ``error`` naming the file (and the tensor).
    """
    path = Path(path)
    fault = _FileFault(path, error, hint)
    # Only the header is read into memory here; the tensors are then read straight into
    # their own storage, so a load never holds the file's bytes twice.
    size, head = _read_head(path, max_bytes, fault)
    if digest is not None and sha256_file(path) != digest:
        fault("its sha256 differs from the one recorded with it (the file was changed, or "
              "comes from another run)")
    metadata, header = _checked_header(head, size, fault)
    if expected is not None:
        missing = sorted(set(expected) - set(header))
        if missing:
            fault("is missing", missing[0])
        unknown = sorted(set(header) - set(expected))
        if unknown:
            fault("is not expected here", unknown[0])
        for name, (shape, dtype) in expected.items():
            found = (tuple(header[name]["shape"]), header[name]["dtype"])
            if found != (tuple(shape), dtype):
                fault(f"has shape {list(found[0])} and dtype {found[1]}; expected "
                      f"{list(shape)} and {dtype}", name)
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001  (the header passed our checks; report, never crash)
        fault(_first_line(exc))
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            fault("holds non-finite weights (NaN or infinity)", name)
    if device != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, metadata


def safetensors_dtype(dtype: Any) -> str:
    """Return the safetensors name of a torch dtype (``torch.float32`` -> ``F32``)."""
    import torch

    names = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
             torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32",
             torch.float32: "F32", torch.int64: "I64", torch.float64: "F64"}
    return names[dtype]


def expected_tensors(tensors: Mapping[str, Any],
                     prefix: str = "") -> dict[str, tuple[tuple[int, ...], str]]:
    """Return ``{prefix + name: (shape, safetensors dtype)}`` of a state dict."""
    return {prefix + k: (tuple(v.shape), safetensors_dtype(v.dtype)) for k, v in tensors.items()}


def _read_head(path: Path, max_bytes: int, fault: _FileFault) -> tuple[int, bytes]:
    """Return the file's size and its first bytes (the length field and the header)."""
    try:
        if not path.is_file():
            fault("the file is missing" if not path.exists() else "it is not a regular file")
        size = path.stat().st_size
        if size == 0:
            fault("the file is empty")
        if size > max_bytes:
            fault(f"the file has {size} bytes, more than the {max_bytes} it can hold")
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) == 8:
                (length,) = struct.unpack("<Q", head)
                head += handle.read(min(length, MAX_HEADER_BYTES, size - 8))
            return size, head
    except OSError as exc:
        fault(exc.strerror or _first_line(exc))


def _checked_header(data: bytes, size: int, fault: _FileFault
                    ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Return (metadata, tensor entries) of a safetensors header, every entry bounds-checked
    against the ``size`` bytes of the file."""
    if len(data) < 8:
        fault(f"{len(data)} bytes are too few for a safetensors header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(MAX_HEADER_BYTES, size - 8) or len(data) < 8 + length:
        fault(f"the header claims {length} bytes in a file of {size}")
    try:
        header = loads_strict(data[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        fault(f"the header is not valid JSON: {_first_line(exc)}")
    if not isinstance(header, dict):
        fault("the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        fault("the metadata is not a map of strings")
    body = size - 8 - length
    ranges = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            fault("is not described by dtype, shape and data_offsets", name)
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPE_BYTES:
            fault(f"has unknown dtype {dtype!r}", name)
        if (not isinstance(shape, list) or len(shape) > MAX_TENSOR_DIMS
                or not all(type(d) is int and 0 <= d <= body for d in shape)):
            fault(f"has an impossible shape {shape!r}", name)
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= body):
            fault(f"has byte range {offsets!r} outside the {body} bytes of tensor data", name)
        if math.prod(shape) * _DTYPE_BYTES[dtype] != offsets[1] - offsets[0]:
            fault(f"has shape {shape} of {dtype} but {offsets[1] - offsets[0]} bytes", name)
        ranges.append(tuple(offsets))
    position = 0
    for begin, end in sorted(ranges):  # safetensors itself refuses overlaps and holes
        if begin != position:
            fault("tensors overlap or leave holes in the data")
        position = end
    if position != body:
        fault(f"{body - position} bytes follow the last tensor")
    return metadata, header


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else "") or type(error).__name__


# --- PyTorch (.pt) files: tensors and plain containers only, never code ------------------------

def load_torch_file(path: str | os.PathLike[str], *, max_bytes: int | None = None,
                    error: type[EnergyQLError] = CheckpointError, safe_types: tuple[Any, ...] = (),
                    finite: bool = True,
                    hint: str = "the file is damaged or was not written by energyql") -> Any:
    """Return the contents of a ``.pt`` file, loaded with ``weights_only`` (no pickled code).

    A pickle that asks for anything but tensors and plain containers is refused with
    :class:`UnsafePickleError` and never executed; an empty, truncated or oversized file and
    any tensor that claims more elements than its storage holds (a stride-0 bomb) and, with
    ``finite``, any non-finite value are ``error`` naming the file.
    """
    import torch

    path = Path(path)
    fault = _FileFault(path, error, hint)
    try:
        if not path.is_file():
            fault("the file is missing" if not path.exists() else "it is not a regular file")
        size = path.stat().st_size
    except OSError as exc:
        fault(exc.strerror or _first_line(exc))
    if size == 0:
        fault("the file is empty")
    if max_bytes is not None and size > max_bytes:
        fault(f"the file has {size} bytes, more than the {max_bytes} it can hold")
    try:
        with torch.serialization.safe_globals(list(safe_types)):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (a hostile file can make the unpickler raise anything)
        import pickle

        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            raise UnsafePickleError(
                f"cannot read '{path}': refused, its pickle asks to run code, not just to "
                "hold tensors (nothing in it was run)",
                hint="only load files you trust; energyql never runs pickled code") from None
        raise error(f"cannot read '{path}' as a PyTorch file: {_first_line(exc)}",
                    hint=hint) from None
    _check_storage(content, fault, finite)
    return content


def _check_storage(value: Any, fault: _FileFault, finite: bool, depth: int = 0) -> None:
    """Refuse tensors whose size exceeds their storage (later copies would allocate it all)."""
    import torch

    if depth > 32:
        fault("containers are nested too deeply")
    if isinstance(value, torch.Tensor):
        if value.numel() * value.element_size() > value.untyped_storage().nbytes():
            fault(f"a tensor of shape {list(value.shape)} is larger than the data behind it")
        # Checked only once the size is known to be backed by bytes actually present.
        if finite and value.is_floating_point() and not bool(value.isfinite().all()):
            fault(f"a tensor of shape {list(value.shape)} holds non-finite values")
    elif isinstance(value, Mapping):
        for item in value.values():
            _check_storage(item, fault, finite, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_storage(item, fault, finite, depth + 1)
