"""Stage checkpoints: what they hold, what they belong to, and how they are read safely.

A stage's checkpoint is two files in the run's folder: ``stage{k}.ckpt.safetensors`` (flow
weights, λ and offsets, and in its metadata the step, the stage's log, the
:class:`CheckpointIdentity` and the sha256 of the optimizer file) and ``stage{k}.optim.pt``
(the optimizer state). The optimizer file is staged and the weights file is the commit point
(:func:`energyql.io.commit`), so the two always come from the same step. Reading checks the
identity before any tensor is read, every tensor's name, shape and dtype against the flow
being resumed, and loads the optimizer file without running pickled code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from energyql.errors import CheckpointError
from energyql.io import (
    commit,
    committed_file,
    dumps_strict,
    expected_tensors,
    load_torch_file,
    loads_strict,
    read_safetensors,
    staged,
)

#: Settings that do not change what training computes: a resumed run may change them.
FREE_SETTINGS = ("device", "threads", "checkpoint_every", "max_bad_steps")
WEIGHTS = "stage{index}.ckpt.safetensors"
OPTIMIZER = "stage{index}.optim.pt"
_HINT = "delete the stage*.ckpt.safetensors and stage*.optim.pt files, or run without --resume"


@dataclass(frozen=True)
class CheckpointIdentity:
    """What a stage checkpoint belongs to: the program up to this stage, the stage, the
    generator and its weights, and the training settings that change the result."""

    program: str
    stage: int
    generator: str
    weights_digest: str
    latent_dim: int
    settings: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"program": self.program, "stage": self.stage, "generator": self.generator,
                "weights_digest": self.weights_digest, "latent_dim": self.latent_dim,
                "settings": dict(self.settings)}

    def difference(self, other: CheckpointIdentity) -> str | None:
        """Return the first thing that differs from ``other``, in words, or None."""
        for name in ("program", "stage", "generator", "weights_digest", "latent_dim"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                return f"its {name.replace('_', ' ')} is {_short(theirs)}, this run's is " \
                       f"{_short(mine)}"
        for key in sorted(set(self.settings) | set(other.settings)):
            if self.settings.get(key) != other.settings.get(key):
                return (f"it was trained with {key}={other.settings.get(key)!r}, this run "
                        f"uses {key}={self.settings.get(key)!r}")
        return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def identity_for(base: Any, source: str, index: int, config: Any) -> CheckpointIdentity:
    """Return the identity of stage ``index`` (canonical ``source``) trained on ``base``."""
    from energyql.sampler import StageSampler

    earlier = [s.source for s in base.stages] if isinstance(base, StageSampler) else []
    root = base.root if isinstance(base, StageSampler) else base
    settings = {f.name: getattr(config, f.name) for f in fields(config)
                if f.name not in FREE_SETTINGS}
    return CheckpointIdentity(program=" | then ".join([*earlier, source]), stage=index,
                              generator=str(getattr(root, "id", "")),
                              weights_digest=str(getattr(root, "weights_digest", "") or ""),
                              latent_dim=int(base.latent_dim), settings=settings)


def remove_all(directory: Path) -> list[Path]:
    """Delete every stage checkpoint in ``directory`` (a finished run's); return what went."""
    gone = []
    for pattern in ("stage*.ckpt.safetensors", "stage*.optim.pt"):
        for path in sorted(Path(directory).glob(pattern)):
            path.unlink(missing_ok=True)
            gone.append(path)
    return gone


def paths(directory: Path, index: int) -> tuple[Path, Path]:
    """Return the weights and optimizer files of stage ``index``."""
    return (Path(directory) / WEIGHTS.format(index=index),
            Path(directory) / OPTIMIZER.format(index=index))


def any_checkpoint(directory: Path) -> bool:
    """Return whether ``directory`` holds a checkpoint of any stage."""
    return Path(directory).is_dir() and any(Path(directory).glob("stage*.ckpt.safetensors"))


def save(directory: Path, index: int, step: int, identity: CheckpointIdentity,
         tensors: Mapping[str, Any], optimizer_state: Mapping[str, Any],
         log: Mapping[str, Any]) -> None:
    """Write stage ``index``'s checkpoint at ``step`` (optimizer staged, weights commit)."""
    import torch
    from safetensors.torch import save_file

    weights, optim = paths(directory, index)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def write_weights(digest: str) -> None:
        from energyql.io import atomic_write

        metadata = {"step": str(step),
                    "log": dumps_strict(log, what="the checkpoint's log", indent=None),
                    "identity": dumps_strict(identity.to_dict(), what="the checkpoint's identity",
                                             indent=None),
                    "optim_sha256": digest}
        atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata=metadata))

    commit(optim, lambda tmp: torch.save(dict(optimizer_state), tmp), write_weights,
           committed_digest=_recorded_optim_digest(weights))


def _recorded_optim_digest(weights: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            return (handle.metadata() or {}).get("optim_sha256")
    except Exception:  # noqa: BLE001  (no checkpoint yet, or a damaged one about to be replaced)
        return None


@dataclass
class Restored:
    """A checkpoint read back: its step, the stage log it recorded, tensors and optimizer state."""

    step: int
    log: dict[str, Any]
    tensors: dict[str, Any]
    optimizer_state: dict[str, Any]


def load(directory: Path, index: int, identity: CheckpointIdentity, expected: Mapping[str, Any],
         parameters: list[Any], steps: int) -> Restored | None:
    """Return stage ``index``'s checkpoint checked against this run, or None if it has none.

    Arguments:
        identity: this run's identity of the stage; a checkpoint of anything else is refused.
        expected: name -> tensor of what the weights file must hold (shapes and dtypes).
        parameters: the optimizer's parameters, in order (the optimizer state must fit them).
        steps: the run's step count (the checkpoint's step must lie within it).
    """
    weights, optim = paths(directory, index)
    if not weights.is_file():
        return None
    wanted = expected_tensors(expected)
    max_bytes = sum(v.numel() * v.element_size() for v in expected.values()) + (16 << 20)
    # The identity is checked from the header before tensors are compared, so that a
    # checkpoint of another program is named as such rather than as "wrong shapes".
    metadata = _metadata(weights)
    if metadata is None:  # unreadable: let the full check say precisely what is wrong
        read_safetensors(weights, max_bytes=max_bytes, hint=_HINT)
        metadata = {}
    saved = _identity(metadata, weights)
    difference = identity.difference(saved)
    if difference is not None:
        raise CheckpointError(f"{weights} belongs to another run: {difference}",
                              hint=f"resume with the same expression and settings, or {_HINT}")
    tensors, metadata = read_safetensors(weights, max_bytes=max_bytes, expected=wanted,
                                         hint=_HINT)
    step = _integer(metadata, "step", weights, 0, steps)
    log = _json(metadata, "log", weights)
    digest = metadata.get("optim_sha256") or None
    found = committed_file(optim, digest)
    if found is None:
        problem = "is missing" if not (optim.is_file() or staged(optim).is_file()) else \
            "does not belong to it (its sha256 differs from the one recorded)"
        raise CheckpointError(f"{optim}, the optimizer state of {weights.name}, {problem}",
                              hint=_HINT)
    floats = sum(p.numel() for p in parameters)
    state = load_torch_file(found, max_bytes=16 * floats + (16 << 20), hint=_HINT)
    _check_optimizer_state(state, parameters, found)
    return Restored(step, log, tensors, state)


def _metadata(weights: Path) -> dict[str, str] | None:
    """The header's metadata alone, or None when the header cannot be read (the whole file is
    checked by read_safetensors after)."""
    import struct

    try:
        with open(weights, "rb") as handle:
            head = handle.read(8)
            if len(head) != 8:
                return None
            (length,) = struct.unpack("<Q", head)
            if length > min(16 << 20, weights.stat().st_size - 8):
                return None
            header = loads_strict(handle.read(length).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(header, dict):
        return None
    metadata = header.get("__metadata__")
    return metadata if isinstance(metadata, dict) else {}


def _identity(metadata: Mapping[str, str], weights: Path) -> CheckpointIdentity:
    data = _json(metadata, "identity", weights)
    try:
        identity = CheckpointIdentity(
            program=data["program"], stage=data["stage"], generator=data["generator"],
            weights_digest=data["weights_digest"], latent_dim=data["latent_dim"],
            settings=data["settings"])
    except (KeyError, TypeError):
        raise CheckpointError(f"{weights}: field 'identity' is incomplete", hint=_HINT) from None
    if not isinstance(identity.settings, dict):
        raise CheckpointError(f"{weights}: field 'identity.settings' is not an object",
                              hint=_HINT)
    return identity


def _json(metadata: Mapping[str, str], key: str, weights: Path) -> dict[str, Any]:
    text = metadata.get(key)
    if not isinstance(text, str):
        raise CheckpointError(f"{weights}: field '{key}' is missing (a checkpoint of an older "
                              "energyql, or not a checkpoint)", hint=_HINT)
    try:
        value = loads_strict(text)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{weights}: field '{key}' is not valid JSON", hint=_HINT) from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{weights}: field '{key}' is not a JSON object", hint=_HINT)
    return value


def _integer(metadata: Mapping[str, str], key: str, weights: Path, low: int, high: int) -> int:
    text = metadata.get(key, "")
    digits = isinstance(text, str) and text.isdigit() and len(text) <= 19
    if not digits or not low <= int(text) <= high:
        raise CheckpointError(f"{weights}: field '{key}' is {text!r}, not a step in "
                              f"{low}..{high}", hint=_HINT)
    return int(text)


def _check_optimizer_state(state: Any, parameters: list[Any], path: Path) -> None:
    """Refuse an optimizer state that does not fit ``parameters`` (before loading it)."""
    import torch

    def fail(problem: str, field: str) -> None:
        raise CheckpointError(f"{path}: field '{field}' {problem}", hint=_HINT)

    if not isinstance(state, dict) or set(state) != {"state", "param_groups"}:
        fail("must be an optimizer state with exactly 'state' and 'param_groups'", "top level")
    groups = state["param_groups"]
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        fail("must be a list of objects", "param_groups")
    ids = [i for g in groups for i in (g.get("params") if isinstance(g.get("params"), list)
                                       else [None])]
    if ids != list(range(len(parameters))):
        fail(f"must list the parameters 0..{len(parameters) - 1} in order", "param_groups")
    for g, group in enumerate(groups):
        for key, value in group.items():
            if isinstance(value, float) and not math.isfinite(value):
                fail(f"is {value}, not a finite number", f"param_groups[{g}].{key}")
    per_param = state["state"]
    if not isinstance(per_param, dict):
        fail("must be an object", "state")
    for key, entry in per_param.items():
        if type(key) is not int or not 0 <= key < len(parameters) or not isinstance(entry, dict):
            fail("is not the state of one of the parameters", f"state.{key}")
        for name, value in entry.items():
            where = f"state.{key}.{name}"
            if isinstance(value, torch.Tensor):
                if value.numel() != 1 and tuple(value.shape) != tuple(parameters[key].shape):
                    fail(f"has shape {list(value.shape)}; the parameter has "
                         f"{list(parameters[key].shape)}", where)
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value):
                fail("must be a tensor or a finite number", where)


__all__ = ["CheckpointIdentity", "Restored", "any_checkpoint", "identity_for", "load", "paths",
           "save"]
