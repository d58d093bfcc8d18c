"""The shapes renderer: determinism, the designed biases, labels that match the pixels."""

from __future__ import annotations

import math
import random

import pytest
import torch

from energyql.worlds.shapes import CATALOG, render


def test_scenes_are_deterministic_and_in_range():
    a, la = render.sample_scenes(64, seed=3)
    b, lb = render.sample_scenes(64, seed=3)
    assert a.shape == (64, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and all(torch.equal(la[k], lb[k]) for k in la)
    assert a.min() >= 0 and a.max() <= 1
    assert set(la) >= {"shape", "color", "size", "x", "y", "rotation"}


def test_joint_table_is_a_biased_non_product_distribution():
    assert math.isclose(sum(render.JOINT.values()), 1.0)
    assert len(render.JOINT) == 18 and min(render.JOINT.values()) > 0
    assert render.marginal("shape") == pytest.approx({"circle": .5, "square": .35, "triangle": .15})
    assert render.marginal("color") == pytest.approx({"red": .6, "green": .28, "blue": .12})
    assert render.marginal("size")["large"] > 0.6
    blue_triangle = sum(p for (s, c, _), p in render.JOINT.items()
                        if (s, c) == ("triangle", "blue"))
    assert blue_triangle == pytest.approx(0.01)
    product = render.marginal("shape")["circle"] * render.marginal("size")["large"]
    circle_large = sum(p for (s, _, z), p in render.JOINT.items() if (s, z) == ("circle", "large"))
    assert abs(circle_large - product) > 0.01


def test_sampled_frequencies_follow_the_table():
    _, labels = render.sample_scenes(20000, seed=1)
    for attribute, values in render.ATTRIBUTES.items():
        counts = torch.bincount(labels[attribute], minlength=len(values)).double() / 20000
        expected = torch.tensor([render.marginal(attribute)[v] for v in values],
                                dtype=torch.float64)
        assert torch.allclose(counts, expected, atol=0.015)


def test_catalog_agrees_with_the_world():
    for attribute in CATALOG.attributes:
        assert render.ATTRIBUTES[attribute.name] == attribute.values
    pose = CATALOG.control("pose")
    assert (pose.parameter("x").low, pose.parameter("x").high) == render.POSITION_RANGE
    rotation = pose.parameter("rotation")
    assert (rotation.low, rotation.high) == render.ROTATION_RANGE


def _compactness(alpha: torch.Tensor) -> float:
    """pi * (max distance from the centroid)^2 / area: 1 circle, ~1.6 square, ~2.4 triangle."""
    ys, xs = torch.nonzero(alpha > 0.5, as_tuple=True)
    weights = alpha[ys, xs]
    cy, cx = (ys * weights).sum() / weights.sum(), (xs * weights).sum() / weights.sum()
    reach = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt().max() + 0.5
    return (math.pi * reach ** 2 / alpha.sum()).item()


def test_labels_match_pixels():
    params = render.sample_params(300, seed=5)
    images = render.render(params)
    alpha = render.coverage(params)
    for i in range(300):
        inside = alpha[i] > 0.9
        mean_rgb = images[i][:, inside].mean(dim=1)
        assert mean_rgb.argmax().item() == params["color"][i].item()
        area = alpha[i].sum().item()
        fully_visible = all(0.25 <= params[k][i] <= 0.75 for k in ("x", "y"))
        # Small shapes cover at most ~50 pixels, fully visible large ones at least ~60.
        if params["size"][i] == 0:
            assert area < 52
        elif fully_visible:
            assert area > 58
        if fully_visible:
            compact = _compactness(alpha[i])
            expected = (1.0, 1.6, 2.4)[params["shape"][i]]
            assert abs(compact - expected) < 0.45, (i, compact, params["shape"][i])
    # The background outside the shape is a dark grey level.
    background = images[:, :, alpha.sum(0) == 0]
    assert background.max() <= render.BACKGROUND_RANGE[1] + 1e-6


def test_captions_are_true_and_carry_reporting_bias():
    _, labels = render.sample_scenes(4000, seed=2)
    texts = render.captions(labels, seed=0)
    assert texts == render.captions(labels, seed=0)
    said = {"small": 0, "large": 0}
    for text, s, c, z in zip(texts, labels["shape"], labels["color"], labels["size"]):
        words = text.split()
        assert words[0] == "a"
        for values, truth in ((render.SHAPES, s), (render.COLORS, c), (render.SIZES, z)):
            named = [w for w in words if w in values]
            assert named in ([], [values[truth]])
        for size in said:
            said[size] += size in words
    n_small = (labels["size"] == 0).sum().item()
    n_large = (labels["size"] == 1).sum().item()
    assert said["small"] / n_small > 0.7 and said["large"] / n_large < 0.25
    assert "a shape" in texts
    rng = random.Random(0)
    assert render.caption("triangle", "blue", "small", rng).startswith("a")


def test_captions_never_name_unknown_values():
    labels = {"shape": torch.tensor([-1, 2] * 200), "color": torch.tensor([0, -1] * 200),
              "size": torch.tensor([-1, -1] * 200)}
    for i, text in enumerate(render.captions(labels, seed=1)):
        words = set(text.split())
        assert not words & set(render.SIZES)
        assert not words & ({"circle", "square", "triangle"} if i % 2 == 0 else set(render.COLORS))
