"""The portraits world's control models, all views of one trained judge network.

Registry keys (see :mod:`energyql.controls.registry`): ``portraits-classifier`` (attributes),
``portraits-pose`` (yaw and pitch in degrees), ``portraits-identity`` (identity factors).
"""

from __future__ import annotations

from pathlib import Path

import torch

from energyql.worlds import read_safetensors, sha256_file
from energyql.worlds.portraits.models import Classifier, IdentityEmbedder, Judge, PoseReader

WEIGHTS = Path(__file__).parent / "weights" / "judge.safetensors"


def load(device: str | torch.device = "cpu", *, path: str | Path | None = None) -> Judge:
    """Return the shipped judge, frozen and in eval mode."""
    path = Path(path) if path is not None else WEIGHTS
    state, metadata = read_safetensors(path)
    judge = Judge(width=int(metadata.get("width", 16)))
    judge.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    judge.weights_digest = sha256_file(path)
    return judge.eval().requires_grad_(False).to(device)


def features(images01: torch.Tensor, model: Judge | None = None, batch: int = 512) -> torch.Tensor:
    """Return the judge's features of portraits in [0, 1] (for Fréchet distances)."""
    model = model if model is not None else load(images01.device)
    with torch.no_grad():
        return torch.cat([model.embed(chunk) for chunk in images01.split(batch)])


def load_attributes(catalog, *, device: str | torch.device = "cpu"):
    """Return the judge's attribute heads as the world's attribute model."""
    from energyql.controls.attributes import ClassifierAttributes

    return ClassifierAttributes(Classifier(load(device=device)), catalog).to(device)


def load_pose(device: str | torch.device = "cpu") -> PoseReader:
    """Return the judge's yaw and pitch reading."""
    return PoseReader(load(device=device)).eval()


def load_identity(device: str | torch.device = "cpu") -> IdentityEmbedder:
    """Return the judge's identity embedding (the ten identity factors)."""
    return IdentityEmbedder(load(device=device)).eval()
