"""Network architectures of the portraits world (plain torch; weights live in ``weights/``).

- :class:`Judge`: one small CNN that reads a portrait's attributes (a logit head per catalog
  attribute), its pose (yaw and pitch in degrees) and its identity factors. The catalog's
  three control models are views of it: :class:`Classifier`, :class:`PoseReader` and
  :class:`IdentityEmbedder`. Identity is regressed onto the ten identity factors, which pose
  leaves alone, so the same face embeds to the same point at every pose.
"""

from __future__ import annotations

import torch
from torch import nn

from energyql.worlds.portraits.render import ATTRIBUTES, IDENTITY, PITCH_RANGE, YAW_RANGE

POSE = ("yaw", "pitch")
POSE_SCALE = torch.tensor([YAW_RANGE[1], PITCH_RANGE[1]])


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
    )


class Judge(nn.Module):
    """Return ``{attribute: logits, "pose": (B, 2) degrees, "identity": (B, 10)}`` for
    portraits in [0, 1], ``(B, 3, 64, 64)``."""

    weights_digest = ""  # the sha256 of the file it was loaded from

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        # A strided stem first: full-resolution blocks cost 4x as much for features (eyes,
        # mouth) that still span two or more pixels at 32x32.
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            _block(w, 2 * w), nn.MaxPool2d(2),        # 16
            _block(2 * w, 4 * w), nn.MaxPool2d(2),    # 8
            _block(4 * w, 4 * w), nn.MaxPool2d(2),    # 4
            nn.Flatten(),
        )
        hidden = 4 * w * 16
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, len(values))
                                    for name, values in ATTRIBUTES.items()})
        self.pose = nn.Sequential(nn.Linear(hidden, 128), nn.ReLU(), nn.Linear(128, len(POSE)))
        self.identity = nn.Sequential(nn.Linear(hidden, 128), nn.ReLU(),
                                      nn.Linear(128, len(IDENTITY)))
        self.register_buffer("pose_scale", POSE_SCALE.clone(), persistent=False)

    def embed(self, images01: torch.Tensor) -> torch.Tensor:
        """Return the features every head reads, ``(B, 64·width)``."""
        return self.features((images01 - 0.5) / 0.25)

    def forward(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.embed(images01)
        out = {name: head(h) for name, head in self.heads.items()}
        out["pose"] = self.pose(h) * self.pose_scale
        out["identity"] = self.identity(h)
        return out


class Classifier(nn.Module):
    """The judge's attribute logits, ``{attribute: (B, K)}``."""

    def __init__(self, judge: Judge):
        super().__init__()
        self.judge = judge

    def forward(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.judge(images01)
        return {name: out[name] for name in ATTRIBUTES}


class PoseReader(nn.Module):
    """The judge's pose reading, ``{"yaw": (B,), "pitch": (B,)}`` in degrees."""

    def __init__(self, judge: Judge):
        super().__init__()
        self.judge = judge

    def forward(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        pose = self.judge(images01)["pose"]
        return {name: pose[:, i] for i, name in enumerate(POSE)}


# What a person keeps when they turn their head: everything but the expression.
KEPT_ATTRIBUTES = tuple(name for name in ATTRIBUTES if name != "smiling")


class IdentityEmbedder(nn.Module):
    """A face's identity as the judge reads it, ``(B, 10 + ΣK)``: the ten identity factors
    and the probabilities of every attribute but the expression (gender, age, group,
    glasses, beard, hair), so that keeping it keeps the person, not only the face's shape."""

    def __init__(self, judge: Judge):
        super().__init__()
        self.judge = judge

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        out = self.judge(images01)
        probabilities = [out[name].softmax(dim=1) for name in KEPT_ATTRIBUTES]
        return torch.cat([out["identity"], *probabilities], dim=1)
