"""Network architectures of the shapes world (plain torch; weights live in ``weights/``).

- :class:`Classifier`: a small CNN with one logit head per catalog attribute.
- :class:`SceneDecoder`: the generator's back end, a learned shape field placed and painted
  by a scene code.
- :class:`CouplingFlow`: an affine-coupling flow (RealNVP) between N(0, I) and scene codes.
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

    weights_digest = ""  # sha256 of the weights file, set by classifier.load()

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

    def embed(self, images01: torch.Tensor) -> torch.Tensor:
        """Return the penultimate features ``(B, 4 * width)`` that every head reads."""
        return self.features((images01 - 0.5) / 0.25)

    def forward(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.embed(images01)
        return {name: head(h) for name, head in self.heads.items()}


# Layout of a scene code: the generator's flow produces 32-d codes whose first SCENE_DIMS
# entries are read by the decoder; the rest are spare dimensions the decoder ignores.
SHAPE_LOGITS = slice(0, 3)   # one logit per shape (data: +2 for the shape, -2 otherwise)
X, Y, ROTATION, LOG_RADIUS = 3, 4, 5, 6  # centre (image units), rotation / 45°, log radius (px)
RGB = slice(7, 10)
BACKGROUND = 10
SCENE_DIMS = 11


class ShapeField(nn.Module):
    """A learned signed-distance field of the three shapes, in the shape's own frame.

    Input: points ``(u, v)`` in units of the radius and soft shape weights; output: signed
    distance in radius units (negative inside). It starts as the unit circle and learns the
    rest from images, so a blend of shape weights morphs one crisp outline into another.
    """

    def __init__(self, hidden: int = 64):
        super().__init__()
        layers = [nn.Linear(5, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()]
        last = nn.Linear(hidden, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, u: torch.Tensor, v: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        b, h, w = u.shape
        points = torch.stack([u, v], dim=-1)
        features = torch.cat([points, weights[:, None, None, :].expand(b, h, w, 3)], dim=-1)
        circle = points.norm(dim=-1) - 1.0
        return circle + self.net(features).squeeze(-1)


class SceneDecoder(nn.Module):
    """Draw 32x32 scenes in [0, 1] from scene codes (B, >= SCENE_DIMS).

    The pose, radius and colours in the code place and paint a learned shape field; edges
    are a steep sigmoid of the signed distance in pixels (anti-aliased, differentiable).
    """

    px: torch.Tensor
    py: torch.Tensor

    def __init__(self, size: int = 32, hidden: int = 64, sharpness: float = 2.0,
                 edge: float = 5.0):
        super().__init__()
        self.size = size
        self.sharpness = sharpness
        self.edge = edge
        self.field = ShapeField(hidden)
        centres = torch.arange(size, dtype=torch.float32) + 0.5
        py, px = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("px", px, persistent=False)
        self.register_buffer("py", py, persistent=False)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.sharpness * code[:, SHAPE_LOGITS], dim=1)
        dx = self.px[None] - (code[:, X] * self.size)[:, None, None]
        dy = self.py[None] - (code[:, Y] * self.size)[:, None, None]
        theta = (code[:, ROTATION] * (math.pi / 4))[:, None, None]
        radius = code[:, LOG_RADIUS].exp()[:, None, None]
        u = (dx * torch.cos(theta) + dy * torch.sin(theta)) / radius
        v = (-dx * torch.sin(theta) + dy * torch.cos(theta)) / radius
        distance = self.field(u, v, weights) * radius          # pixels
        alpha = torch.sigmoid(-self.edge * distance)[:, None]
        colour = code[:, RGB][:, :, None, None]
        background = code[:, BACKGROUND][:, None, None, None]
        return (background * (1 - alpha) + colour * alpha).clamp(0, 1)


def scene_codes(params: dict[str, torch.Tensor], dim: int = 32,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Return the scene codes (n, dim) of renderer parameters; spare entries are N(0, 1)."""
    n = params["shape"].shape[0]
    code = torch.randn(n, dim, generator=generator)
    code[:, SHAPE_LOGITS] = 4.0 * nn.functional.one_hot(params["shape"], 3).float() - 2.0
    code[:, X] = params["x"]
    code[:, Y] = params["y"]
    code[:, ROTATION] = params["rotation"] / 45.0
    code[:, LOG_RADIUS] = params["scale"].log()
    code[:, RGB] = params["rgb"]
    code[:, BACKGROUND] = params["background"]
    return code


class _Coupling(nn.Module):
    """One affine coupling: the masked half conditions a scale and shift of the other half."""

    mask: torch.Tensor

    def __init__(self, dim: int, hidden: int, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)
        layers = [nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()]
        last = nn.Linear(hidden, 2 * dim)
        # Start as the identity, so that training begins from a standardised Gaussian.
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

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

    loc: torch.Tensor
    log_scale: torch.Tensor

    def __init__(self, dim: int = 32, layers: int = 8, hidden: int = 256, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("log_scale", torch.zeros(dim))
        blocks = []
        for _ in range(layers):
            perm = torch.randperm(dim, generator=g)
            mask = torch.zeros(dim)
            mask[perm[: dim // 2]] = 1.0
            blocks.append(_Coupling(dim, hidden, mask))
        self.blocks = nn.ModuleList(blocks)
        self.couplings = tuple(blocks)  # the same modules, typed (ModuleList yields nn.Module)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latents to codes (sampling direction)."""
        h = z
        for block in self.couplings:
            h = block.inverse(h)
        return h * torch.exp(self.log_scale) + self.loc

    def log_prob(self, code: torch.Tensor) -> torch.Tensor:
        """Return log-density of ``code`` rows under the flow, shape ``(B,)``."""
        h = (code - self.loc) * torch.exp(-self.log_scale)
        logdet = -self.log_scale.sum().expand(code.shape[0])
        for block in reversed(self.couplings):
            h, ld = block(h)
            logdet = logdet + ld
        base = -0.5 * (h.pow(2).sum(dim=1) + self.dim * math.log(2 * math.pi))
        return base + logdet
