"""Inverse graphics for the shapes world: a pose regressor and an identity embedding.

- :class:`PoseRegressor` reads a shape's centre ``x``, ``y`` (image widths/heights) and its
  ``rotation`` (degrees; meaningless for circles) from a 32x32 image; it backs ``pose(...)``.
- :class:`IdentityEmbedding` is what stays fixed when a shape moves: the classifier's
  probabilities of shape, colour and size, concatenated; it backs ``keep(identity)``.

Train the regressor with ``python -m energyql.worlds.shapes.pose --steps 1500``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from energyql.worlds import read_safetensors, sha256_file, write_safetensors
from energyql.worlds.shapes.models import _conv_block
from energyql.worlds.shapes.render import ROTATION_RANGE, sample_scenes

WEIGHTS = Path(__file__).parent / "weights" / "pose.safetensors"
ROTATION_SCALE = (ROTATION_RANGE[1] - ROTATION_RANGE[0]) / 2


class PoseRegressor(nn.Module):
    """Return ``{"x", "y", "rotation"}`` readings, each ``(B,)``, for images in [0, 1]."""

    weights_digest = ""  # sha256 of the weights file, set by load()

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        # No global pooling before the head: position must survive to the output.
        self.features = nn.Sequential(
            _conv_block(3, w), nn.MaxPool2d(2), _conv_block(w, 2 * w), nn.MaxPool2d(2),
            _conv_block(2 * w, 2 * w), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(2 * w * 16, 128), nn.ReLU(), nn.Linear(128, 3))

    def forward(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.head(self.features((images01 - 0.5) / 0.25))
        return {"x": out[:, 0], "y": out[:, 1], "rotation": out[:, 2] * ROTATION_SCALE}


class IdentityEmbedding(nn.Module):
    """The classifier's shape, colour and size probabilities as one vector per image."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(images01)
        return torch.cat([F.softmax(logits[k], dim=-1) for k in ("shape", "color", "size")], 1)


def load(device: str | torch.device = "cpu", *, path: str | Path | None = None) -> PoseRegressor:
    """Return the shipped pose regressor, frozen and in eval mode."""
    state, metadata = read_safetensors(Path(path) if path else WEIGHTS)
    model = PoseRegressor(width=int(metadata.get("width", 16)))
    model.load_state_dict(state)
    model.weights_digest = sha256_file(Path(path) if path else WEIGHTS)
    return model.eval().requires_grad_(False).to(device)


def load_identity(device: str | torch.device = "cpu") -> IdentityEmbedding:
    from energyql.worlds.shapes import classifier

    return IdentityEmbedding(classifier.load(device=device))


def pose_loss(model: PoseRegressor, images, labels) -> torch.Tensor:
    readings = model(images)
    loss = (F.mse_loss(readings["x"], labels["x"].float())
            + F.mse_loss(readings["y"], labels["y"].float()))
    has_angle = labels["shape"] != 0  # circles have no rotation to read
    if has_angle.any():
        error = (readings["rotation"] - labels["rotation"].float())[has_angle] / ROTATION_SCALE
        loss = loss + 0.1 * error.pow(2).mean()
    return loss


def evaluate(model: PoseRegressor, n: int = 2000, seed: int = 12345) -> dict[str, float]:
    """Mean absolute error per reading on held-out rendered scenes."""
    images, labels = sample_scenes(n, seed)
    with torch.no_grad():
        readings = model(images)
    angle = labels["shape"] != 0
    return {"x": float((readings["x"] - labels["x"]).abs().mean()),
            "y": float((readings["y"] - labels["y"]).abs().mean()),
            "rotation": float((readings["rotation"] - labels["rotation"])[angle].abs().mean())}


def train(steps: int, *, batch: int = 128, lr: float = 2e-3, seed: int = 0, width: int = 16,
          out: Path = WEIGHTS, threads: int = 1, log=print) -> dict:
    """Train the regressor on freshly rendered scenes; write its weights atomically."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = PoseRegressor(width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    began = time.time()
    for step in range(steps):
        images, labels = sample_scenes(batch, generator=generator)
        loss = pose_loss(model, images, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 200 == 0:
            log(f"pose step {step}/{steps} loss {loss.item():.5f}")
    model.eval()
    errors = evaluate(model)
    metadata = {"width": width, "steps": steps, "seed": seed, "threads": threads,
                "seconds": round(time.time() - began), "held_out_mae": errors}
    write_safetensors(out, model.state_dict(), metadata)
    return metadata


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--quick", action="store_true", help="a few steps, for tests")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    result = train(5 if args.quick else args.steps, seed=args.seed, out=args.out,
                   threads=args.threads)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
