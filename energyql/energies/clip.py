"""The CLIP energy: ``w · (1 − cos(img_emb(aug(x)), text_emb))`` averaged over augmentations.

``w`` is a world setting (:class:`energyql.catalog.ClipSettings`): PromptGen's 600 for real
CLIPs; for the shapes world the CLIP model's own logit scale ``s``, so that with weight 1 the
energy is CLIP's text–image logit up to a constant and the target ``p0 · exp(-E)`` reweights
images as CLIP's softmax would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from energyql.controls.augment import augment
from energyql.energies.base import EnergyTerm, Features


class ClipEnergy(EnergyTerm):
    """Weighted cosine distance between augmented images and a prompt in CLIP space.

    Arguments:
        clip: a :class:`~energyql.controls.clip.ClipModel` or ensemble.
        prompt: the text CLIP compares images with (kept as ``.prompt``).
        copies: augmented copies per image.
        weight: ``w``; None uses the model's logit scale.
        augment: options for :func:`~energyql.controls.augment.augment` (default: the model's).
        augment_at: ``"full"`` augments at the images' resolution, then CLIP resizes;
            ``"clip"`` resizes larger images to CLIP's input first (cheaper).
        text: the term's source for progress bars and parts (kept as ``.text``).
    """

    def __init__(self, clip, prompt: str, *, copies: int = 8, weight: float | None = None,
                 augment: Mapping[str, Any] | None = None, augment_at: str = "clip",
                 text: str = ""):
        super().__init__()
        self.clip = clip
        self.prompt = prompt
        self.copies = copies
        self.weight = weight
        self.augment_options = dict(clip.augment_options if augment is None else augment)
        self.augment_at = augment_at
        self.text = text or f'clip("{prompt}")'
        self.register_buffer("text_embedding", clip.encode_text([prompt])[0], persistent=False)

    @property
    def scale(self) -> float:
        """``w``: the configured weight, or the model's logit scale."""
        return self.clip.logit_scale if self.weight is None else self.weight

    def forward(self, features: Features) -> torch.Tensor:
        images = features.images
        side = self.clip.image_size
        if self.augment_at == "clip" and max(images.shape[-2:]) > side:
            # Augment at CLIP's input size, not the generator's: the same judgement up to the
            # order of resampling, at about half the time and memory (docs/benchmarks.md).
            images = F.interpolate(images, size=(side, side), mode="bilinear",
                                   align_corners=False, antialias=True)
        views = augment(images, self.copies, generator=features.generator, **self.augment_options)
        cos = (self.clip.encode_image(views) @ self.text_embedding).view(-1, images.shape[0])
        return self.scale * (1 - cos.mean(0))
