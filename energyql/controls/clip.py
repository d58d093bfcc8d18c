"""CLIP through open_clip: loading by name, and encoding of [0, 1] images and cached texts.

A CLIP spec is ``"shapes-clip"`` (the embedded world's small CLIP), ``"NAME:TAG"`` (an
open_clip model with a pretrained tag, e.g. ``"ViT-B-32:openai"``, cached under the energyql
cache directory), or ``"NAME:PATH"`` (an open_clip architecture with a local checkpoint file).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from energyql.errors import WeightsMissingError


class ClipModel(nn.Module):
    """A frozen open_clip model that encodes [0, 1] images and caches text features.

    Arguments:
        model: the open_clip model.
        tokenizer: its tokenizer.
        image_size: the side its image tower expects.
        mean, std: its input normalisation.
        augment_options: keyword options for :func:`energyql.controls.augment.augment` that
            suit the model's training augmentations.
    """

    def __init__(self, model: nn.Module, tokenizer, *, name: str, image_size: int,
                 mean, std, augment_options: dict | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.augment_options = augment_options or {}
        self._text_cache: dict[str, torch.Tensor] = {}

    @property
    def logit_scale(self) -> float:
        """The model's own cosine-to-logit scale (100 for OpenAI CLIP)."""
        return float(self.model.logit_scale.exp())

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Return unit-norm image embeddings for images in [0, 1]."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size),
                                   mode="bilinear", align_corners=False, antialias=True)
        return F.normalize(self.model.encode_image((images - self.mean) / self.std), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Return unit-norm text embeddings, computed once per text and cached."""
        missing = [t for t in texts if t not in self._text_cache]
        if missing:
            tokens = self.tokenizer(missing).to(self.mean.device)
            features = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            self._text_cache.update(zip(missing, features))
        return torch.stack([self._text_cache[t].to(self.mean.device) for t in texts])


def _cache_dir() -> Path:
    return Path(os.environ.get("ENERGYQL_CACHE", Path.home() / ".cache" / "energyql")) / "clip"


@functools.lru_cache(maxsize=8)
def load_clip(spec: str, device: str = "cpu") -> ClipModel:
    """Return the CLIP model a spec names (see the module docstring)."""
    if spec == "shapes-clip":
        from energyql.worlds.shapes import clip as shapes_clip

        model, tokenizer = shapes_clip.load(device=device)
        return ClipModel(model, tokenizer, name=spec, image_size=shapes_clip.IMAGE_SIZE,
                         mean=shapes_clip.MEAN, std=shapes_clip.STD,
                         augment_options=dict(translate=0.08, scale=(0.9, 1.1),
                                              rotate_degrees=10.0, cutout=0.0)).to(device)
    import open_clip

    name, sep, source = spec.partition(":")
    if not sep or not source:
        raise WeightsMissingError(
            f"CLIP spec '{spec}' names no weights",
            hint="use NAME:TAG (e.g. 'ViT-B-32:openai') or NAME:PATH to a local checkpoint")
    is_file = Path(source).expanduser().exists()
    if not is_file and source not in open_clip.list_pretrained_tags_by_model(name):
        raise WeightsMissingError(
            f"no CLIP weights '{source}' for model '{name}': not a file and not a known tag",
            hint="known tags: " + ", ".join(open_clip.list_pretrained_tags_by_model(name)[:8]))
    try:
        model = open_clip.create_model(
            name, pretrained=str(Path(source).expanduser()) if is_file else source,
            cache_dir=str(_cache_dir()), device=device, require_pretrained=True)
    except (RuntimeError, OSError) as error:  # open_clip reports failed downloads this way
        raise WeightsMissingError(
            f"could not load CLIP '{spec}': {error}",
            hint=f"offline? download the checkpoint elsewhere and pass it as '{name}:/path/to/file', "
                 f"or put it in the cache directory {_cache_dir()} (ENERGYQL_CACHE overrides)",
        ) from None
    cfg = model.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    return ClipModel(model, open_clip.get_tokenizer(name), name=spec, image_size=size,
                     mean=cfg["mean"], std=cfg["std"]).to(device)
