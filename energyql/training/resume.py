"""A stage's checkpoint: the flow, λ (all its views), the optimizer and the stage's log.

Files and their validation live in :mod:`energyql.checkpoints`; this module says what a
stage's checkpoint holds and puts it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from energyql import checkpoints
from energyql.energies import StageEnergy
from energyql.errors import CheckpointError
from energyql.flows import LatentFlow


def stage_tensors(flow: LatentFlow, energy: StageEnergy,
                  extra: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Return the tensors a stage's checkpoint holds: ``flow.*``, the constraints' λ and the
    objective's own state (``extra``: its persistent chains)."""
    tensors = {f"flow.{k}": v for k, v in flow.state_dict().items()}
    tensors.update(energy.constraints.state())
    if energy.lambda_grid is not None:  # a slider stage's λ at every grid setting
        tensors["lambda_grid.values"] = energy.lambda_grid.values
        tensors["lambda_grid.offset"] = energy.lambda_grid.offset
    tensors.update(extra or {})
    return tensors


def save_stage(directory: Path, index: int, step: int, flow: LatentFlow,
               optimizer: torch.optim.Optimizer, energy: StageEnergy, log: dict[str, Any],
               identity: checkpoints.CheckpointIdentity,
               extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write the stage's checkpoint; ``identity`` says which program and settings it is of."""
    checkpoints.save(directory, index, step, identity, stage_tensors(flow, energy, extra),
                     optimizer.state_dict(), log)


def restore_stage(directory: Path, index: int, flow: LatentFlow,
                  optimizer: torch.optim.Optimizer, energy: StageEnergy, device: str,
                  identity: checkpoints.CheckpointIdentity, steps: int,
                  extra: dict[str, torch.Tensor] | None = None
                  ) -> tuple[int, dict[str, Any]] | None:
    """Restore a stage's checkpoint; return ``(step, log record)`` or None if it has none.

    ``extra`` (the objective's state) is filled in place.
    A checkpoint of another program or other settings, or one that does not fit this flow,
    is a CheckpointError naming the file and what differs; nothing is restored from it.
    """
    restored = checkpoints.load(directory, index, identity, stage_tensors(flow, energy, extra),
                                [p for g in optimizer.param_groups for p in g["params"]], steps)
    if restored is None:
        return None
    try:
        optimizer.load_state_dict(restored.optimizer_state)
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{checkpoints.paths(directory, index)[1]} does not fit this "
                              f"stage's optimizer: {str(error).splitlines()[0]}",
                              hint=checkpoints._HINT) from None
    tensors = {k: v.to(device) for k, v in restored.tensors.items()}
    flow.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("flow.")})
    energy.constraints.load_state(tensors)
    if energy.lambda_grid is not None:
        energy.lambda_grid.values.copy_(tensors["lambda_grid.values"])
        energy.lambda_grid.offset.copy_(tensors["lambda_grid.offset"])
    for key, value in (extra or {}).items():
        value.copy_(tensors[key])
    return restored.step, restored.log
