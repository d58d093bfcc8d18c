"""The portraits world's small CLIP, defined and loaded through open_clip.

Its architecture is an open_clip model config (``weights/energyql-portraits-clip.json``: a
small ModifiedResNet over 64x64 portraits and a 2-layer text transformer) registered under
:data:`MODEL_NAME`; its weights are a safetensors checkpoint that open_clip loads as it loads
any local CLIP file. It learned from the captions of :mod:`energyql.worlds.portraits.render`,
reporting bias included: that bias is what ``then debias(clip_bias)`` removes.

Example:
    >>> model, tokenizer = load()
    >>> text = model.encode_text(tokenizer(["a smiling man"]))
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

MODEL_NAME = "energyql-portraits-clip"
CONFIG = Path(__file__).parent / "weights" / f"{MODEL_NAME}.json"
WEIGHTS = Path(__file__).parent / "weights" / "clip.safetensors"

IMAGE_SIZE = 64
# open_clip's default (OpenAI) normalisation, so that its own preprocessing matches.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def register() -> None:
    """Add the model config to open_clip's registry (idempotent)."""
    import open_clip

    if MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG)


def normalize(images01: torch.Tensor) -> torch.Tensor:
    """Map images in [0, 1] to the model's input normalisation."""
    mean = torch.tensor(MEAN, device=images01.device, dtype=images01.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images01.device, dtype=images01.dtype).view(1, 3, 1, 1)
    return (images01 - mean) / std


def create(pretrained: str | Path | None = None):
    """Return the open_clip model (random weights unless ``pretrained`` names a file)."""
    import open_clip

    register()
    if pretrained is None:
        # open_clip logs a warning for a model without weights; training starts that way.
        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            return open_clip.create_model(MODEL_NAME)
        finally:
            logger.setLevel(level)
    return open_clip.create_model(MODEL_NAME, pretrained=str(pretrained))


def load(device: str | torch.device = "cpu", *, path: str | Path | None = None):
    """Return ``(model, tokenizer)``: the shipped small CLIP, frozen, in eval mode."""
    import open_clip

    from energyql.errors import WeightsMissingError

    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise WeightsMissingError(
            f"weights file '{path}' is missing",
            hint="retrain it with `python -m energyql.worlds.portraits.train clip`",
        )
    model = create(path)
    model.eval().requires_grad_(False)
    return model.to(device), open_clip.get_tokenizer(MODEL_NAME)


def load_control(device: str | torch.device = "cpu"):
    """Return the small CLIP as a control model (registry key ``portraits-clip``)."""
    from energyql.catalog import PORTRAITS
    from energyql.controls.clip import ClipModel

    model, tokenizer = load(device=device)
    return ClipModel(model, tokenizer, name="portraits-clip", image_size=IMAGE_SIZE, mean=MEAN,
                     std=STD, augment_options=PORTRAITS.clip.augment_options).to(device)
