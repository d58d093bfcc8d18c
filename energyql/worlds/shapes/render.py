"""The shapes domain: a biased scene sampler, an anti-aliased renderer and biased captions.

One shape (circle, square, triangle) of one colour (red, green, blue), small or large, at a
jittered position and rotation on a plain dark background, 32x32 RGB in [0, 1].

The joint distribution of (shape, color, size) is designed to be biased and not a product
(:data:`JOINT`), and captions carry a reporting bias (the size word is usually left out for
large shapes), so that control and de-biasing are visible and measurable.

Example:
    >>> images, labels = sample_scenes(16, seed=0)
    >>> images.shape, sorted(labels)[:3]
    (torch.Size([16, 3, 32, 32]), ['color', 'rotation', 'scale'])
"""

from __future__ import annotations

import math
import random

import torch

IMAGE_SIZE = 32

# Value order matches the world's catalog (and the classifier's outputs).
SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue")
SIZES = ("small", "large")
ATTRIBUTES = {"shape": SHAPES, "color": COLORS, "size": SIZES}

# P(shape, color): marginals shape .50/.35/.15 and color .60/.28/.12; blue triangles 1 %.
SHAPE_COLOR = {
    ("circle", "red"): 0.32, ("circle", "green"): 0.12, ("circle", "blue"): 0.06,
    ("square", "red"): 0.20, ("square", "green"): 0.10, ("square", "blue"): 0.05,
    ("triangle", "red"): 0.08, ("triangle", "green"): 0.06, ("triangle", "blue"): 0.01,
}
# P(large | shape): large is more common, and more so for circles (so the joint is no product).
P_LARGE = {"circle": 0.70, "square": 0.55, "triangle": 0.60}

COMBOS: tuple[tuple[str, str, str], ...] = tuple(
    (s, c, z) for s in SHAPES for c in COLORS for z in SIZES
)
"""Every (shape, color, size) combination, in the order of :data:`JOINT_PROBS`."""

JOINT: dict[tuple[str, str, str], float] = {
    (s, c, z): SHAPE_COLOR[s, c] * (P_LARGE[s] if z == "large" else 1.0 - P_LARGE[s])
    for s, c, z in COMBOS
}
"""The data distribution: P(shape, color, size), summing to 1."""

JOINT_PROBS = torch.tensor([JOINT[k] for k in COMBOS], dtype=torch.float64)


def marginal(attribute: str) -> dict[str, float]:
    """Return the data's marginal distribution of ``attribute`` (value -> probability)."""
    index = ("shape", "color", "size").index(attribute)
    out = {v: 0.0 for v in ATTRIBUTES[attribute]}
    for combo, p in JOINT.items():
        out[combo[index]] += p
    return out


# Geometry, in pixels. "radius" is the circle's radius; squares and triangles are scaled so
# that one radius gives shapes of similar visual weight.
RADIUS = {"small": (3.0, 4.0), "large": (5.5, 7.0)}
SQUARE_HALF_SIDE = 0.85    # half side = 0.85 r
TRIANGLE_CIRCUMRADIUS = 1.25  # circumradius = 1.25 r
POSITION_RANGE = (0.2, 0.8)   # centre, in image widths/heights (the catalog's pose range)
ROTATION_RANGE = (-45.0, 45.0)  # degrees; unique for squares (90° symmetry) and triangles (120°)

# Base RGB of each colour; each scene jitters it a little.
BASE_RGB = torch.tensor([[0.88, 0.16, 0.14], [0.16, 0.78, 0.22], [0.18, 0.32, 0.95]])
COLOR_JITTER = 0.06
BRIGHTNESS_RANGE = (0.85, 1.0)
BACKGROUND_RANGE = (0.02, 0.14)


def sample_params(n: int, seed: int | None = None, *,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Return ``n`` scene parameters drawn from the biased data distribution.

    Keys: ``shape``, ``color``, ``size`` (LongTensor indices in catalog order); ``x``, ``y``
    (centre in image units), ``rotation`` (degrees), ``scale`` (radius in pixels), ``rgb``
    (n, 3), ``background`` (n,).
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    g = generator
    combo = torch.multinomial(JOINT_PROBS.float(), n, replacement=True, generator=g)
    shape = combo // (len(COLORS) * len(SIZES))
    color = (combo // len(SIZES)) % len(COLORS)
    size = combo % len(SIZES)

    def uniform(low: float, high: float, *shape_: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape_, generator=g)

    lo = torch.tensor([RADIUS["small"][0], RADIUS["large"][0]])[size]
    hi = torch.tensor([RADIUS["small"][1], RADIUS["large"][1]])[size]
    scale = lo + (hi - lo) * torch.rand(n, generator=g)
    x = uniform(*POSITION_RANGE, n)
    y = uniform(*POSITION_RANGE, n)
    rotation = uniform(*ROTATION_RANGE, n)
    rgb = BASE_RGB[color] + uniform(-COLOR_JITTER, COLOR_JITTER, n, 3)
    rgb = (rgb * uniform(*BRIGHTNESS_RANGE, n, 1)).clamp(0, 1)
    background = uniform(*BACKGROUND_RANGE, n)
    return {"shape": shape, "color": color, "size": size, "x": x, "y": y,
            "rotation": rotation, "scale": scale, "rgb": rgb, "background": background}


def coverage(params: dict[str, torch.Tensor], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Return the anti-aliased coverage (n, size, size) in [0, 1] of each scene's shape.

    Coverage is a 1-pixel linear ramp of a signed distance, which anti-aliases edges.
    """
    n = params["shape"].shape[0]
    centres = (torch.arange(size, dtype=torch.float32) + 0.5)
    py, px = torch.meshgrid(centres, centres, indexing="ij")
    dx = px[None] - (params["x"] * size)[:, None, None]
    dy = py[None] - (params["y"] * size)[:, None, None]
    # Rotate the pixel offsets into each shape's own frame (image y points down).
    theta = torch.deg2rad(params["rotation"])[:, None, None]
    u = dx * torch.cos(theta) + dy * torch.sin(theta)
    v = -dx * torch.sin(theta) + dy * torch.cos(theta)
    r = params["scale"][:, None, None]

    circle = torch.sqrt(u * u + v * v) - r
    half = SQUARE_HALF_SIDE * r
    square = torch.maximum(u.abs(), v.abs()) - half
    # Equilateral triangle pointing up: the inradius is half the circumradius; three edge
    # normals at 90°, 210°, 330° (in the shape frame, y down, so "up" is -v).
    inradius = 0.5 * TRIANGLE_CIRCUMRADIUS * r
    edges = []
    for angle in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3):
        nx, ny = math.cos(angle), math.sin(angle)
        edges.append(u * nx + v * ny - inradius)
    triangle = torch.stack(edges).amax(dim=0)

    sdf = torch.stack([circle, square, triangle], dim=1)  # (n, 3, H, W)
    sdf = sdf[torch.arange(n), params["shape"]]
    return (0.5 - sdf).clamp(0, 1)


def render(params: dict[str, torch.Tensor], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Return images (n, 3, size, size) in [0, 1] for the parameters from :func:`sample_params`."""
    alpha = coverage(params, size)[:, None]
    background = params["background"][:, None, None, None].expand(-1, 3, 1, 1)
    colour = params["rgb"][:, :, None, None]
    return background * (1 - alpha) + colour * alpha


LABEL_KEYS = ("shape", "color", "size", "x", "y", "rotation", "scale")


def sample_scenes(n: int, seed: int | None = None, *,
                  generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return ``n`` rendered scenes and their labels.

    Returns:
        images: float (n, 3, 32, 32) in [0, 1].
        labels: ``shape``, ``color``, ``size`` (LongTensor, catalog value order) and the
        continuous ``x``, ``y`` (image units), ``rotation`` (degrees), ``scale`` (pixels).
    """
    params = sample_params(n, seed, generator=generator)
    return render(params), {k: params[k] for k in LABEL_KEYS}


# --- captions ---------------------------------------------------------------------------------

# Reporting bias: how often a caption names each attribute.
P_SIZE_WORD = {"small": 0.85, "large": 0.15}  # "large" is the unremarkable default
P_COLOR_WORD = 0.85
P_SHAPE_WORD = 0.85
P_PLAIN = 0.04  # "a shape": names nothing

PROMPTS: dict[str, tuple[str, ...]] = {
    "shape": tuple(f"a {s}" for s in SHAPES),
    "color": tuple(f"a {c} shape" for c in COLORS),
    "size": tuple(f"a {z} shape" for z in SIZES),
}
"""Zero-shot prompts per attribute, in catalog value order."""


def caption(shape: str | None, color: str | None, size: str | None,
            rng: random.Random) -> str:
    """Return one caption of a scene, with the domain's reporting bias.

    A value given as None is unknown (e.g. a generated image the classifier is unsure of)
    and is never named.
    """
    if rng.random() < P_PLAIN:
        return "a shape"
    words = []
    # Draw every coin even for unknown values, so one rng gives the same stream either way.
    if rng.random() < (P_SIZE_WORD[size] if size else 0.0) and size:
        words.append(size)
    if rng.random() < P_COLOR_WORD and color:
        words.append(color)
    words.append(shape if rng.random() < P_SHAPE_WORD and shape else "shape")
    return "a " + " ".join(words)


def captions(labels: dict[str, torch.Tensor], seed: int | None = None, *,
             rng: random.Random | None = None) -> list[str]:
    """Return one biased caption per scene for labels from :func:`sample_scenes`.

    A label of -1 marks an unknown value, which the caption leaves out.
    """
    rng = rng if rng is not None else random.Random(seed)

    def name(values, index):
        return values[index] if index >= 0 else None

    return [
        caption(name(SHAPES, s), name(COLORS, c), name(SIZES, z), rng)
        for s, c, z in zip(labels["shape"].tolist(), labels["color"].tolist(),
                           labels["size"].tolist())
    ]
