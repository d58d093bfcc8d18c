"""Network architectures of the shapes world (plain torch; weights live in ``weights/``).

- :class:`Classifier`: a small CNN with one logit head per catalog attribute.
- :class:`Encoder` / :class:`Decoder`: the autoencoder whose decoder is the generator's back end.
- :class:`CouplingFlow`: an affine-coupling flow (RealNVP) between N(0, I) and the codes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from energyql.worlds.shapes.render import ATTRIBUTES


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
    )


class Classifier(nn.Module):
    """Return logits per attribute for images in [0, 1]: ``{"shape": (B, 3), ...}``."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_block(3, w), nn.MaxPool2d(2),           # 16x16
            _conv_block(w, 2 * w), nn.MaxPool2d(2),       # 8x8
            _conv_block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.heads = nn.ModuleDict({
            name: nn.Linear(4 * w, len(values)) for name, values in ATTRIBUTES.items()
        })

    def forward(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features((images01 - 0.5) / 0.25)
        return {name: head(h) for name, head in self.heads.items()}


class Encoder(nn.Module):
    """Map images in [0, 1] to codes (B, code_dim)."""

    def __init__(self, code_dim: int = 32, width: int = 32):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 4, stride=2, padding=1), nn.SiLU(),            # 16
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.SiLU(),        # 8
            nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1), nn.SiLU(),    # 4
            nn.Flatten(), nn.Linear(4 * w * 16, 256), nn.SiLU(), nn.Linear(256, code_dim),
            # Standardised codes give the training noise on them a fixed relative size.
            nn.BatchNorm1d(code_dim, affine=False),
        )

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        return self.net(images01 * 2 - 1)


class _UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
        return self.act(self.conv2(self.act(self.conv1(h))))


class Decoder(nn.Module):
    """Map codes (B, code_dim) to images (B, 3, 32, 32) in [0, 1]."""

    def __init__(self, code_dim: int = 32, width: int = 32):
        super().__init__()
        w = width
        self.width = w
        self.fc = nn.Sequential(nn.Linear(code_dim, 256), nn.SiLU(), nn.Linear(256, 4 * w * 16))
        self.up = nn.Sequential(
            nn.SiLU(), _UpBlock(4 * w, 2 * w), _UpBlock(2 * w, w), _UpBlock(w, w),
        )
        self.out = nn.Conv2d(w, 3, 3, padding=1)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        h = self.fc(code).view(-1, 4 * self.width, 4, 4)
        return torch.sigmoid(self.out(self.up(h)))


class _Coupling(nn.Module):
    """One affine coupling: the masked half conditions a scale and shift of the other half."""

    def __init__(self, dim: int, hidden: int, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 2 * dim),
        )
        # Start as the identity, so that training begins from a standardised Gaussian.
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.net(kept).chunk(2, dim=1)
        # A soft bound on the log-scale keeps training stable.
        s = 2.0 * torch.tanh(s / 2.0) * (1 - self.mask)
        return s, t * (1 - self.mask)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._scale_shift(x * self.mask)
        return x * torch.exp(s) + t, s.sum(dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self._scale_shift(y * self.mask)
        return (y - t) * torch.exp(-s)


class CouplingFlow(nn.Module):
    """An invertible map between N(0, I) latents and data codes.

    ``forward(z)`` returns codes (the sampling direction); ``log_prob(code)`` evaluates the
    density of codes under the flow, for maximum-likelihood training.
    """

    def __init__(self, dim: int = 32, layers: int = 8, hidden: int = 256, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("log_scale", torch.zeros(dim))
        blocks, perms = [], []
        for i in range(layers):
            perm = torch.randperm(dim, generator=g)
            mask = torch.zeros(dim)
            mask[perm[: dim // 2]] = 1.0
            blocks.append(_Coupling(dim, hidden, mask))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latents to codes (sampling direction)."""
        h = z
        for block in self.blocks:
            h = block.inverse(h)
        return h * torch.exp(self.log_scale) + self.loc

    def log_prob(self, code: torch.Tensor) -> torch.Tensor:
        """Return log-density of ``code`` rows under the flow, shape ``(B,)``."""
        h = (code - self.loc) * torch.exp(-self.log_scale)
        logdet = -self.log_scale.sum().expand(code.shape[0])
        for block in reversed(self.blocks):
            h, ld = block(h)
            logdet = logdet + ld
        base = -0.5 * (h.pow(2).sum(dim=1) + self.dim * math.log(2 * math.pi))
        return base + logdet
