"""The shapes generator: ``z ~ N(0, I) -> flow -> scene code -> decoder -> 32x32 image``.

A two-stage model trained on rendered scenes: a decoder that places and paints a learned
shape field (its signed-distance network is fitted to rendered images), and an affine-coupling
flow fitted by maximum likelihood to the scenes' codes (mass-covering, so rare combinations
such as blue triangles keep their share). The whole map from ``z`` to the image is
differentiable; ``latent_dim`` is 32 (11 scene entries, the rest spare dimensions that the
flow mixes in).

Example:
    >>> import energyql.generators
    >>> gen = energyql.generators.load("shapes")
    >>> images = gen.decode(gen.sample_latent(8))   # (8, 3, 32, 32) in [0, 1]
"""

from __future__ import annotations

from pathlib import Path

import torch

from energyql.errors import check_choice
from energyql.generators.base import Generator
from energyql.worlds import read_safetensors, sha256_file
from energyql.worlds.shapes import render
from energyql.worlds.shapes.models import (
    LOG_RADIUS,
    RGB,
    ROTATION,
    SHAPE_LOGITS,
    CouplingFlow,
    SceneDecoder,
    X,
    Y,
)

# A radius (pixels) between the renderer's small and large ranges separates the two sizes.
_SIZE_THRESHOLD = (render.RADIUS["small"][1] + render.RADIUS["large"][0]) / 2

WEIGHTS = Path(__file__).parent / "weights" / "generator.safetensors"


class ShapesGenerator(Generator):
    """The embedded world's unconditional generator (frozen, eval mode)."""

    id = "shapes"
    catalog = "shapes"
    image_size = 32

    def __init__(self, decoder: SceneDecoder, flow: CouplingFlow, *, weights_digest: str = "",
                 metadata: dict | None = None):
        super().__init__()
        self.decoder = decoder
        self.flow = flow
        self.latent_dim = flow.dim
        self.weights_digest = weights_digest
        self.metadata = dict(metadata or {})
        # A latent scale below 1 trades a little diversity for fewer in-between samples; it
        # is part of the shipped model (metadata), so the prior stays N(0, I).
        self.temperature = float(self.metadata.get("temperature", 1.0))

    def decode(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return images in [0, 1], shape (B, 3, 32, 32); ``context`` is ignored."""
        return self.decoder(self.flow(z * self.temperature))

    knows_truth = True

    @torch.no_grad()
    def truth(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return what the decoder draws for ``z``, read from its scene code.

        ``shape`` is the strongest shape logit, ``color`` the base colour closest in hue
        (cosine, so brightness does not matter), ``size`` the radius against the midpoint of
        the renderer's two ranges; ``x``, ``y`` (image units) and ``rotation`` (degrees) are
        the pose the decoder places the shape at.
        """
        code = self.flow(z * self.temperature)
        base = torch.nn.functional.normalize(render.BASE_RGB.to(code), dim=1)
        hue = torch.nn.functional.normalize(code[:, RGB], dim=1) @ base.T
        return {
            "shape": code[:, SHAPE_LOGITS].argmax(1),
            "color": hue.argmax(1),
            "size": (code[:, LOG_RADIUS].exp() > _SIZE_THRESHOLD).long(),
            "x": code[:, X], "y": code[:, Y], "rotation": code[:, ROTATION] * 45.0,
        }


def build(metadata: dict) -> ShapesGenerator:
    """Return an untrained generator with the architecture named in ``metadata``."""
    decoder = SceneDecoder(hidden=int(metadata["field_hidden"]))
    flow = CouplingFlow(int(metadata["code_dim"]), int(metadata["flow_layers"]),
                        int(metadata["flow_hidden"]), int(metadata.get("seed", 0)))
    return ShapesGenerator(decoder, flow, metadata=metadata)


def load(spec=None, *, device: str | torch.device = "cpu", path: str | Path | None = None,
         **options) -> ShapesGenerator:
    """Return the shipped shapes generator (the registry's loader for ``"shapes"``).

    Arguments:
        spec: the registry's :class:`~energyql.generators.registry.GeneratorSpec` (unused:
            the weights ship inside the package).
        device: where to put it.
        path: another ``generator.safetensors`` (e.g. one trained with ``--out``).

    Any other option is refused (a UsageError naming the ones it takes).
    """
    for name in options:
        check_choice(name, ("device", "path"), what="option of the shapes generator")
    path = Path(path) if path is not None else WEIGHTS
    state, metadata = read_safetensors(path)
    generator = build(metadata)
    generator.load_state_dict(state)
    generator.weights_digest = sha256_file(path)
    generator.eval().requires_grad_(False)
    return generator.to(device)
