"""Reading generator checkpoint files (rosinality ``.pt``, NVIDIA ``.pkl``) without running code.

Kept apart from :mod:`energyql.generators.stylegan2` (the network) so that the pickle converter
and the network do not import each other: stylegan2 -> checkpoints -> nvidia_pkl -> fir.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import torch

from energyql.errors import CheckpointError, WeightsMissingError
from energyql.generators import nvidia_pkl

__all__ = ["read_checkpoint"]


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Return ``(generator state dict, latent_avg or None)`` from a ``.pt`` or NVIDIA ``.pkl``.

    ``.pt`` files are read with ``torch.load(weights_only=True)``; ``.pkl`` files go through the
    restricted converter of :mod:`energyql.generators.nvidia_pkl`. Neither runs pickled code.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsMissingError(f"StyleGAN2 checkpoint '{path}' not found",
                                  hint="pass an existing rosinality .pt or NVIDIA .pkl file")
    if path.suffix == ".pkl":
        checkpoint = nvidia_pkl.convert(path)
    else:
        try:
            # Checkpoints written by rosinality's train.py also hold its argparse options.
            with torch.serialization.safe_globals([argparse.Namespace]):
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
            raise CheckpointError(f"cannot read '{path}' as a PyTorch checkpoint: "
                                  f"{type(error).__name__}: {str(error).splitlines()[0]}",
                                  hint="loading refuses files that would run pickled code; "
                                       "NVIDIA pickles must end in .pkl") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"'{path}' does not hold a dict of tensors")
    state = checkpoint.get("g_ema", checkpoint)
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}': 'g_ema' is not a state dict")
    latent_avg = checkpoint.get("latent_avg") if state is not checkpoint else None
    return state, latent_avg if isinstance(latent_avg, torch.Tensor) else None
