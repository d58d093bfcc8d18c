"""The CLIP energy: ``w · s · (1 − cos(img_emb(aug(x)), text_emb))`` averaged over augmentations.

``s`` is the CLIP model's own logit scale (100 for OpenAI CLIP), so that with weight 1 the
energy is CLIP's text–image logit up to a constant: the target ``p0 · exp(-E)`` then reweights
images as CLIP's softmax would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from energyql.controls.augment import augment
from energyql.energies.base import EnergyTerm, Features


class ClipEnergy(EnergyTerm):
    """Scaled cosine distance between augmented images and a prompt in CLIP space."""

    def __init__(self, clip, text: str, *, copies: int = 8, source: str = ""):
        super().__init__()
        self.clip = clip
        self.prompt = text
        self.copies = copies
        self.text = source or f'clip("{text}")'
        self.register_buffer("text_embedding", clip.encode_text([text])[0], persistent=False)

    def forward(self, features: Features) -> torch.Tensor:
        images = features.images
        side = self.clip.image_size
        if max(images.shape[-2:]) > side:
            # Augment at CLIP's input size, not the generator's: the same judgement up to the
            # order of resampling, at half the cost (H100, 1024 px, 8 images x 16 copies:
            # 79 vs 143 ms and 4.6 vs 9.0 GiB, docs/benchmarks.md).
            images = F.interpolate(images, size=(side, side), mode="bilinear",
                                   align_corners=False, antialias=True)
        views = augment(images, self.copies, generator=features.generator,
                        **self.clip.augment_options)
        cos = (self.clip.encode_image(views) @ self.text_embedding).view(-1, images.shape[0])
        return self.clip.logit_scale * (1 - cos.mean(0))
