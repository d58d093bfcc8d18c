"""The portraits world's small CLIP, defined and loaded through open_clip.

Its architecture is an open_clip model config (``weights/energyql-portraits-clip.json``: a
small ModifiedResNet over 64x64 portraits and a 2-layer text transformer) registered under
:data:`MODEL_NAME`; its weights are a safetensors checkpoint that open_clip loads as it loads
any local CLIP file. It learned from the captions of :mod:`energyql.worlds.portraits.render`,
reporting bias included: that bias is what ``then debias(clip_bias)`` removes. What the
worlds' small CLIPs share lives in :mod:`energyql.worlds.small_clip`.

Example:
    >>> model, tokenizer = load()
    >>> text = model.encode_text(tokenizer(["a smiling man"]))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from energyql.worlds.small_clip import MEAN, STD, SmallClip, normalize

CLIP = SmallClip("energyql-portraits-clip", Path(__file__).parent / "weights", 64, "portraits")
MODEL_NAME, CONFIG, WEIGHTS, IMAGE_SIZE = CLIP.name, CLIP.config, CLIP.weights, CLIP.image_size
register, create, load = CLIP.register, CLIP.create, CLIP.load


def load_control(device: str | torch.device = "cpu") -> Any:
    """Return the small CLIP as a control model (registry key ``portraits-clip``)."""
    from energyql.worlds.portraits import CATALOG

    return CLIP.load_control(CATALOG.clip.augment_options, device)


__all__ = ["CLIP", "CONFIG", "IMAGE_SIZE", "MEAN", "MODEL_NAME", "STD", "WEIGHTS", "create",
           "load", "load_control", "normalize", "register"]
