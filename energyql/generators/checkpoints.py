"""Reading generator checkpoint files (rosinality ``.pt``, NVIDIA ``.pkl``) without running code.

Kept apart from :mod:`energyql.generators.stylegan2` (the network) so that the pickle converter
and the network do not import each other: stylegan2 -> checkpoints -> nvidia_pkl -> fir.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from energyql.errors import CheckpointError, WeightsMissingError
from energyql.generators import nvidia_pkl
from energyql.io import is_system_path, load_torch_file

__all__ = ["check_state", "read_checkpoint"]


#: Largest resolution a StyleGAN2 checkpoint may imply (2 ** (to_rgbs + 2)); 1024 is FFHQ's.
MAX_RESOLUTION = 4096
MAX_MAPPING_LAYERS = 32
MAX_CHANNELS = 8192
_RGB_KEY = re.compile(r"to_rgbs\.(\d+)\.conv\.weight")
_STYLE_KEY = re.compile(r"style\.(\d+)\.weight")
_HINT = "pass a rosinality StyleGAN2 .pt (a dict with 'g_ema') or an NVIDIA .pkl"


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Return ``(generator state dict, latent_avg or None)`` from a ``.pt`` or NVIDIA ``.pkl``.

    ``.pt`` files are read with ``torch.load(weights_only=True)``; ``.pkl`` files go through the
    restricted converter of :mod:`energyql.generators.nvidia_pkl`. Neither runs pickled code.
    The state dict is checked before a network is shaped from it: tensors only, no tensor
    larger than its data, and keys that imply at most :data:`MAX_RESOLUTION`.
    """
    path = Path(path).expanduser()
    if is_system_path(path):
        raise CheckpointError(f"'{path}' is a system file, not a StyleGAN2 checkpoint",
                              hint=_HINT)
    if not path.is_file():
        raise WeightsMissingError(f"StyleGAN2 checkpoint '{path}' not found",
                                  hint="pass an existing rosinality .pt or NVIDIA .pkl file")
    if path.suffix == ".pkl":
        checkpoint = nvidia_pkl.convert(path)
    else:
        # Checkpoints written by rosinality's train.py also hold its argparse options; their
        # optimizer states may hold anything, so only the generator's tensors must be finite.
        checkpoint = load_torch_file(path, safe_types=(argparse.Namespace,), finite=False,
                                     hint="loading refuses files that would run pickled code; "
                                          "NVIDIA pickles must end in .pkl")
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"'{path}' does not hold a dict of tensors", hint=_HINT)
    state = checkpoint.get("g_ema", checkpoint)
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}': 'g_ema' is not a state dict", hint=_HINT)
    check_state(state, path)
    latent_avg = checkpoint.get("latent_avg") if state is not checkpoint else None
    return state, latent_avg if isinstance(latent_avg, torch.Tensor) else None


def check_state(state: dict, path: Path) -> None:
    """Refuse a generator state dict a StyleGAN2 could not be shaped from within bounds."""
    def fail(problem: str, key: str | None = None) -> None:
        where = f"'{path}': key '{key}'" if key is not None else f"'{path}':"
        raise CheckpointError(f"{where} {problem}", hint=_HINT)

    for key, value in state.items():
        if not isinstance(key, str):
            fail(f"the state dict has a key {key!r} that is not a name")
        if not isinstance(value, torch.Tensor):
            fail(f"is {type(value).__name__}, not a tensor", key)
        if value.is_floating_point() and not bool(value.isfinite().all()):
            fail("holds non-finite values (NaN or infinity)", key)
    rgbs = sorted(int(m.group(1)) for k in state if (m := _RGB_KEY.fullmatch(k)))
    if rgbs != list(range(len(rgbs))):
        fail("numbers its to_rgbs layers with gaps")
    if 2 ** (len(rgbs) + 2) > MAX_RESOLUTION:
        fail(f"has {len(rgbs)} to_rgbs layers, a resolution of 2**{len(rgbs) + 2}; at most "
             f"{MAX_RESOLUTION} is supported")
    if sum(1 for k in state if _STYLE_KEY.fullmatch(k)) > MAX_MAPPING_LAYERS:
        fail(f"has more than {MAX_MAPPING_LAYERS} mapping layers")
    for j in range(len(rgbs)):
        key = f"convs.{2 * j}.conv.weight"
        if key not in state:
            fail("is missing (every to_rgbs layer needs its convolution)", key)
    for key in ("input.input", "conv1.conv.weight", "conv1.conv.modulation.weight",
                *(f"convs.{2 * j}.conv.weight" for j in range(len(rgbs)))):
        value = state.get(key)
        if value is not None and (value.dim() < 2 or max(value.shape) > MAX_CHANNELS):
            fail(f"has shape {list(value.shape)}, not a StyleGAN2 layer of at most "
                 f"{MAX_CHANNELS} channels", key)
