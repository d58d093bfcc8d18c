"""Embedded worlds (procedural domains with their own trained models) and weight-file helpers.

The helpers here are shared by every loader of safetensors weights: reading a state dict with
its metadata, writing one atomically, and the sha256 digest that artifacts record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from energyql.errors import WeightsMissingError
from energyql.io import save_tensors, sha256_file

__all__ = ["sha256_file", "read_safetensors", "write_safetensors"]


def read_safetensors(path: str | os.PathLike, device: str = "cpu"):
    """Return ``(state_dict, metadata)`` from a safetensors file.

    ``metadata`` is the file's string metadata, with values that hold JSON decoded.

    Raises:
        WeightsMissingError: the file does not exist.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsMissingError(
            f"weights file '{path}' is missing",
            hint="reinstall energyql, or retrain with `python -m energyql.worlds.shapes.train`",
        )
    tensors = {}
    with safe_open(str(path), framework="pt", device=str(device)) as handle:
        raw = handle.metadata() or {}
        names = handle.keys()  # a safe_open handle is not iterable itself
        for key in names:
            tensors[key] = handle.get_tensor(key)
    metadata = {}
    for key, value in raw.items():
        try:
            metadata[key] = json.loads(value)
        except ValueError:
            metadata[key] = value
    return tensors, metadata


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> str:
    """Write ``tensors`` to ``path`` atomically (temp file, then rename); return its sha256.

    Non-string metadata values are stored as JSON.
    """
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    save_tensors(path, tensors, metadata=meta)
    return sha256_file(path)
