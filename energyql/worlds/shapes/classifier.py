"""The shapes attribute classifier: logits for shape, color and size (catalog value order).

Example:
    >>> clf = load()
    >>> logits = clf(images01)            # {"shape": (B, 3), "color": (B, 3), "size": (B, 2)}
"""

from __future__ import annotations

from pathlib import Path

import torch

from energyql.worlds import read_safetensors, sha256_file
from energyql.worlds.shapes.models import Classifier

WEIGHTS = Path(__file__).parent / "weights" / "classifier.safetensors"


def build(metadata: dict | None = None) -> Classifier:
    """Return an untrained classifier with the architecture named in ``metadata``."""
    return Classifier(width=int((metadata or {}).get("width", 32)))


def load(device: str | torch.device = "cpu", *, path: str | Path | None = None) -> Classifier:
    """Return the shipped classifier, frozen and in eval mode.

    Its ``forward(images01)`` takes images in [0, 1], shape (B, 3, 32, 32), and returns a
    dict of logits; it is differentiable with respect to the images.
    """
    path = Path(path) if path is not None else WEIGHTS
    state, metadata = read_safetensors(path)
    model = build(metadata)
    model.load_state_dict(state)
    model.weights_digest = sha256_file(path)
    model.eval().requires_grad_(False)
    return model.to(device)


def load_attributes(catalog, *, device: str | torch.device = "cpu"):
    """Return the classifier as the world's attribute model (registry key ``shapes-classifier``)."""
    from energyql.controls.attributes import ClassifierAttributes

    return ClassifierAttributes(load(device=device), catalog).to(device)


def features(images01: torch.Tensor, model: Classifier | None = None,
             batch: int = 512) -> torch.Tensor:
    """Return the shipped (or given) classifier's penultimate features of images in [0, 1]."""
    model = model if model is not None else load(images01.device)
    with torch.no_grad():
        return torch.cat([model.embed(chunk) for chunk in images01.split(batch)])
