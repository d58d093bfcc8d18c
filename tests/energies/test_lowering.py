"""Lowering the graph to energies: each construct computes the math docs/language.md states."""

import math

import pytest
import torch
import torch.nn.functional as F

import energyql as eq
from energyql.energies import ControlModels, lower_stage
from energyql.energies.constraint import joint_probabilities
from energyql.energies.predicate import log1mexp
from energyql.worlds.shapes import CATALOG as SHAPES


class FixedAttributes(torch.nn.Module):
    """An attribute model that returns fixed probabilities, whatever the images."""

    def __init__(self, probs: dict[str, list[list[float]]]):
        super().__init__()
        self.probs = {k: torch.tensor(v) for k, v in probs.items()}

    def forward(self, images):
        return {k: v.log() for k, v in self.probs.items()}


PROBS = {
    "shape": [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]],
    "color": [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]],
    "size": [[0.9, 0.1], [0.3, 0.7]],
}


def energy_of(src: str) -> torch.Tensor:
    models = ControlModels(SHAPES, attributes=FixedAttributes(PROBS))
    stage = eq.compile(src, gen="shapes").stages[0]
    total, _ = lower_stage(stage, models)(torch.zeros(2, 3, 32, 32))
    return total


def p(attr, value):
    return torch.tensor(PROBS[attr])[:, SHAPES.attribute(attr).values.index(value)]


def test_predicate_is_minus_log_p():
    assert torch.allclose(energy_of("color == red"), -p("color", "red").log(), atol=1e-5)


def test_not_is_minus_log_one_minus_p():
    assert torch.allclose(energy_of("not color == red"), -(1 - p("color", "red")).log(), atol=1e-5)


def test_and_adds_energies():
    expected = -(p("color", "red").log() + p("shape", "circle").log())
    assert torch.allclose(energy_of("color == red & shape == circle"), expected, atol=1e-5)


def test_or_of_predicates_is_the_soft_or():
    a, b = p("color", "red"), p("shape", "triangle")
    assert torch.allclose(energy_of("color == red or shape == triangle"),
                          -(a + b - a * b).log(), atol=1e-5)


def test_weights_scale_energies():
    expected = -2.5 * p("color", "red").log()
    assert torch.allclose(energy_of("2.5 * color == red"), expected, atol=1e-5)


def test_bare_binary_and_value_aliases_resolve_through_the_catalog():
    assert torch.allclose(energy_of("size == big"), -p("size", "large").log(), atol=1e-5)


def test_constraint_energy_is_minus_lambda_dot_phi():
    models = ControlModels(SHAPES, attributes=FixedAttributes(PROBS))
    energy = lower_stage(eq.compile("uniform(shape x size)", gen="shapes").stages[0], models)
    constraint = energy.constraints[0]
    constraint.lam.copy_(torch.arange(6.0))
    total, _ = energy(torch.zeros(2, 3, 32, 32))
    shape, size = torch.tensor(PROBS["shape"]), torch.tensor(PROBS["size"])
    phi = (shape[:, :, None] * size[:, None, :]).flatten(1)
    assert torch.allclose(total, -(phi * torch.arange(6.0)).sum(1), atol=1e-5)
    assert torch.allclose(phi.sum(1), torch.ones(2))


def test_joint_probabilities_follow_itertools_product_order():
    lp = {"a": torch.tensor([[0.25, 0.75]]).log(), "b": torch.tensor([[0.1, 0.2, 0.7]]).log()}
    joint = joint_probabilities(lp, ("a", "b"))
    assert torch.allclose(joint[0], torch.tensor([0.025, 0.05, 0.175, 0.075, 0.15, 0.525]))


def test_log1mexp_is_accurate_and_finite_near_zero():
    x = torch.tensor([-1e-8, -0.1, -5.0, -50.0])
    assert torch.isfinite(log1mexp(x)).all()
    assert torch.allclose(log1mexp(x[1:]), torch.log(1 - torch.exp(x[1:])), rtol=1e-5)


class FakeClip(torch.nn.Module):
    """A 'CLIP' whose image embedding is the mean colour: text 'red' is (1, 0, 0)."""

    augment_options = dict(cutout=0.0)
    logit_scale = 10.0
    image_size = 32

    def encode_image(self, images):
        return F.normalize(images.mean((2, 3)), dim=-1)

    def encode_text(self, texts):
        table = {"red": [1.0, 0, 0], "green": [0, 1.0, 0], "blue": [0, 0, 1.0]}
        return F.normalize(torch.tensor([table[t] for t in texts]), dim=-1)


def test_clip_energy_is_scaled_cosine_distance_and_prefers_the_prompt():
    models = ControlModels(SHAPES, clip_copies=2)
    models.clip = lambda spec: FakeClip()
    energy = lower_stage(eq.compile('clip("red")', gen="shapes").stages[0], models)
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1
    blue = torch.zeros(1, 3, 8, 8)
    blue[:, 2] = 1
    e_red, _ = energy(red, torch.Generator().manual_seed(0))
    e_blue, _ = energy(blue, torch.Generator().manual_seed(0))
    assert float(e_red) == pytest.approx(0.0, abs=1e-4)
    assert float(e_blue) == pytest.approx(10.0, abs=1e-4)  # scale · (1 − cos 90°)
    assert math.isfinite(float(e_blue))


def test_clip_energy_augments_at_clips_input_size_not_the_generators():
    seen = []

    class RecordingClip(FakeClip):
        def encode_image(self, images):
            seen.append(tuple(images.shape))
            return super().encode_image(images)

    models = ControlModels(SHAPES, clip_copies=3)
    models.clip = lambda spec: RecordingClip()
    energy = lower_stage(eq.compile('clip("red")', gen="shapes").stages[0], models)
    large = torch.zeros(2, 3, 128, 128)
    large[:, 0] = 1
    value, _ = energy(large, torch.Generator().manual_seed(0))
    assert seen == [(6, 3, 32, 32)]  # 3 copies of 2 images, already at CLIP's 32 px
    assert value.tolist() == pytest.approx([0.0, 0.0], abs=1e-4)


def test_conditional_control_without_a_pose_model_is_a_clear_error():
    from energyql.catalog import FACES, Control

    # Both worlds have one (faces: tests/controls/test_face_pose.py); an unknown key has none.
    with pytest.raises(eq.EnergyQLError, match="unknown pose model 'shapes-pse'") as info:
        ControlModels(FACES).pose(Control("pose", (), model="shapes-pse"))
    assert "did you mean 'shapes-pose'?" in info.value.hint and "face-pose" in info.value.hint


def test_constraint_and_control_in_one_stage_are_refused():
    from energyql.energies.conditional import PoseEnergy

    models = ControlModels(SHAPES, attributes=FixedAttributes(PROBS))
    models.pose = lambda control: torch.nn.Identity()
    stage = eq.compile("pose(x in 0.3..0.7) & uniform(color)", gen="shapes").stages[0]
    with pytest.raises(eq.EnergyQLError, match="own stage"):
        lower_stage(stage, models)
    energy = lower_stage(eq.compile("pose(x in 0.3..0.7)", gen="shapes").stages[0], models)
    assert energy.is_conditional and isinstance(energy.pointwise[0], PoseEnergy)
    assert [p.name for p in energy.context] == ["x"]


def test_pose_model_is_loaded_once_per_control_models():
    from energyql.worlds.shapes import CATALOG as shapes

    models = ControlModels(shapes)
    control = shapes.control("pose")
    assert models.pose(control) is models.pose(control)
