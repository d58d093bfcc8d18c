"""Differentiable image augmentation for CLIP energies.

PromptGen averages CLIP's judgement over many augmented copies of each image; without it a flow
learns images that fool the text model instead of matching the prompt. Each copy gets a random
affine warp (translation, scale, small rotation) and a random cutout, both differentiable in
the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment(images: torch.Tensor, copies: int, *, generator: torch.Generator | None = None,
            translate: float = 0.1, scale: tuple[float, float] = (0.85, 1.1),
            rotate_degrees: float = 10.0, cutout: float = 0.25) -> torch.Tensor:
    """Return ``copies`` augmented versions of each image, shape ``(copies * B, 3, H, W)``.

    Copies are grouped copy-major: rows ``[k*B:(k+1)*B]`` are copy ``k`` of the batch.
    Randomness comes from ``generator`` (on the CPU) so that training stays reproducible.
    """
    if copies <= 0:
        return images
    b, _, h, w = images.shape
    n = copies * b
    rand = lambda *shape: torch.rand(*shape, generator=generator).to(images.device)  # noqa: E731
    angle = (rand(n) * 2 - 1) * math.radians(rotate_degrees)
    zoom = scale[0] + rand(n) * (scale[1] - scale[0])
    shift = (rand(n, 2) * 2 - 1) * translate * 2  # grid units span [-1, 1]
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(images.dtype)
    batch = images.repeat(copies, 1, 1, 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cutout > 0:
        size = max(1, int(round(cutout * min(h, w))))
        ys = (rand(n) * (h - size + 1)).long()
        xs = (rand(n) * (w - size + 1)).long()
        rows = torch.arange(h, device=images.device)[None, :, None]
        cols = torch.arange(w, device=images.device)[None, None, :]
        hole = ((rows >= ys[:, None, None]) & (rows < ys[:, None, None] + size)
                & (cols >= xs[:, None, None]) & (cols < xs[:, None, None] + size))
        out = out * (~hole)[:, None].to(out.dtype)
    return out
