"""The faces pose model: landmark geometry, MTCNN's O-Net, lowering, and a conditional run."""

import json
import math
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

import energyql as eq
from energyql.catalog import FACES
from energyql.controls.face_pose import (
    FFHQ_FACE_BOX,
    HEAD,
    FacePoseEstimator,
    load_face_pose,
    pose_from_landmarks,
)
from energyql.controls.faces import FaceCrop
from energyql.energies import ControlModels, lower_stage
from energyql.energies.base import Features
from energyql.energies.conditional import PoseEnergy
from energyql.errors import EnergyQLError, WeightsMissingError
from tests.controls.helpers import save_random_facenet

# Landmarks of a frontal face laid out like the head model: eyes, nose, mouth corners.
FRONTAL = torch.tensor([[[-0.5, 0.0], [0.5, 0.0], [0.0, 0.57], [-0.415, 1.16], [0.415, 1.16]]])


@pytest.fixture(scope="module")
def estimator():
    return load_face_pose()


def draw_face(size: int = 128, *, box: FaceCrop = FFHQ_FACE_BOX,
              nose_dx: float = 0.0) -> torch.Tensor:
    """A drawn face (skin oval, eyes, nose, mouth) filling ``box``; ``nose_dx`` moves the nose
    right by that share of the box. Returns ``(1, 3, size, size)`` in [0, 1]."""
    axis = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid((axis - box.top) / box.side, (axis - box.left) / box.side,
                            indexing="ij")
    image = torch.tensor([0.3, 0.35, 0.4]).view(3, 1, 1).repeat(1, size, size)

    def blob(cx, cy, rx, ry, colour):
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        image[:, inside] = torch.tensor(colour).view(3, 1)

    blob(0.5, 0.52, 0.36, 0.46, [0.85, 0.65, 0.55])
    for x in (0.31, 0.69):
        blob(x, 0.40, 0.07, 0.035, [1.0, 1.0, 1.0])
        blob(x, 0.40, 0.03, 0.03, [0.1, 0.05, 0.05])
    blob(0.5 + nose_dx, 0.58, 0.05, 0.03, [0.6, 0.4, 0.35])
    blob(0.5, 0.76, 0.16, 0.03, [0.6, 0.2, 0.2])
    return image[None]


# --- the geometry ------------------------------------------------------------------------------


def test_frontal_landmarks_read_zero_yaw_and_pitch():
    for points in (FRONTAL, HEAD.project(torch.zeros(1), torch.zeros(1)), 40 * FRONTAL + 7):
        pose = pose_from_landmarks(points)
        assert set(pose) == {"yaw", "pitch"} and pose["yaw"].shape == (1,)
        assert abs(float(pose["yaw"])) < 1e-4 and abs(float(pose["pitch"])) < 1e-4


def test_projected_head_model_gives_back_its_angles_whatever_the_roll_scale_and_shift():
    yaw, pitch = torch.meshgrid(torch.linspace(-60, 60, 9), torch.linspace(-40, 40, 9),
                                indexing="ij")
    yaw, pitch = yaw.flatten(), pitch.flatten()
    roll = torch.linspace(-30, 30, len(yaw))
    points = HEAD.project(yaw, pitch, roll, scale=53.0) + torch.tensor([100.0, -20.0])
    pose = pose_from_landmarks(points)
    assert (pose["yaw"] - yaw).abs().max() < 1e-3
    assert (pose["pitch"] - pitch).abs().max() < 1e-3


def test_sign_conventions():
    # Worked by hand, not through the head model: the nose moves right -> positive yaw; the nose
    # moves up towards the eye line -> positive pitch (the face tilts up).
    right, up = FRONTAL.clone(), FRONTAL.clone()
    right[0, 2, 0] += 0.1
    up[0, 2, 1] -= 0.1
    assert float(pose_from_landmarks(right)["yaw"]) > 5
    assert float(pose_from_landmarks(up)["pitch"]) > 5
    assert abs(float(pose_from_landmarks(up)["yaw"])) < 1e-4
    # tan(yaw) = offset · cos(pitch) / (d · D) with d = 0.40: a 0.1 IOD nose offset reads 14°.
    assert float(pose_from_landmarks(right)["yaw"]) == pytest.approx(14.04, abs=0.01)
    # A mirrored face (x -> -x, left and right landmarks swapped) has the opposite yaw.
    turned = HEAD.project(torch.tensor([25.0]), torch.tensor([10.0]))
    mirrored = turned * torch.tensor([-1.0, 1.0])
    mirrored = mirrored[:, [1, 0, 2, 4, 3]]
    assert float(pose_from_landmarks(mirrored)["yaw"]) == pytest.approx(-25.0, abs=1e-3)
    assert float(pose_from_landmarks(mirrored)["pitch"]) == pytest.approx(10.0, abs=1e-3)
    # The head model's own projection agrees: yaw > 0 puts the nose right of the eye midpoint.
    assert float(turned[0, 2, 0]) > 0


def test_degenerate_landmarks_give_finite_readings_and_gradients():
    points = torch.cat([torch.zeros(1, 5, 2), FRONTAL[:, [1, 0, 2, 4, 3]], torch.randn(4, 5, 2)])
    points.requires_grad_(True)
    pose = pose_from_landmarks(points)
    (pose["yaw"].sum() + pose["pitch"].sum()).backward()
    assert torch.isfinite(pose["yaw"]).all() and torch.isfinite(pose["pitch"]).all()
    assert pose["yaw"].abs().max() <= 90 and pose["pitch"].abs().max() <= 90
    assert torch.isfinite(points.grad).all()


# --- O-Net and the estimator -------------------------------------------------------------------


def test_onet_loads_the_shipped_weights_and_finds_a_drawn_face(estimator):
    faces = estimator.box(draw_face())
    assert faces.shape == (1, 3, 48, 48)
    points, prob = estimator.onet(faces)
    assert points.shape == (1, 5, 2) and prob.shape == (1,)
    assert float(prob) > 0.9
    drawn = torch.tensor([[0.31, 0.40], [0.69, 0.40], [0.5, 0.58], [0.34, 0.76], [0.66, 0.76]])
    assert (points[0] - drawn).abs().max() < 0.04
    noise = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    noise_points, noise_prob = estimator.onet(noise)
    assert noise_points.shape == (3, 5, 2) and torch.isfinite(noise_points).all()
    assert (noise_prob < 0.5).all()


def test_estimator_is_frozen_and_its_yaw_reaches_the_pixels(estimator):
    estimator.train()
    assert not estimator.training and not estimator.onet.net.training
    assert not any(p.requires_grad for p in estimator.parameters())
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    images.requires_grad_(True)
    readings = estimator(images)
    assert set(readings) == {"yaw", "pitch"}
    assert all(v.shape == (3,) and torch.isfinite(v).all() for v in readings.values())
    readings["yaw"].sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    # Only the face box gets gradient; with antialiased resizing all of it does.
    box = images.grad[..., 17:55, 13:51]
    assert images.grad.abs().sum() == pytest.approx(box.abs().sum().item(), rel=1e-5)
    assert (box.abs().sum(1) > 0).float().mean() > 0.9


def test_a_drawn_nose_moved_right_reads_as_positive_yaw_and_the_mirror_as_negative(estimator):
    frontal, turned = draw_face(256), draw_face(256, nose_dx=0.06)
    yaw = estimator(torch.cat([frontal, turned, turned.flip(-1)]))["yaw"]
    # O-Net is not exactly mirror-symmetric: the symmetric drawing reads 2.4°, not 0.
    assert abs(float(yaw[0])) < 5
    assert float(yaw[1]) > float(yaw[0]) + 5
    # The FFHQ box is symmetric about the image centre, so the mirror sees the face mirrored.
    assert float(yaw[2]) < float(yaw[0]) - 5 and float(yaw[2]) < -5


def test_missing_weights_and_a_wrong_box_are_clear_errors(tmp_path):
    with pytest.raises(WeightsMissingError, match="O-Net"):
        load_face_pose(path=tmp_path / "absent.pt")
    with pytest.raises(EnergyQLError, match="48 pixels"):
        FacePoseEstimator(load_face_pose().onet, FaceCrop(0.2, 0.2, 0.6, size=160))
    custom = load_face_pose(box=FaceCrop(0.1, 0.1, 0.8, size=48))
    assert custom.box.side == 0.8 and custom(torch.rand(1, 3, 32, 32))["pitch"].shape == (1,)


# --- the language and a conditional run --------------------------------------------------------


def test_faces_pose_lowers_to_the_landmark_estimator():
    stage = eq.compile("pose(yaw in -30..30, pitch in -10..10)", gen="stylegan2-ffhq").stages[0]
    energy = lower_stage(stage, ControlModels(FACES))
    term = energy.pointwise[0]
    assert isinstance(term, PoseEnergy) and isinstance(term.pose_model, FacePoseEstimator)
    assert [p.name for p in energy.context] == ["yaw", "pitch"]
    images = torch.rand(2, 3, 32, 32)
    values = term(Features(images, context=torch.tensor([[10.0, 0.0], [-10.0, 5.0]])))
    assert values.shape == (2,) and torch.isfinite(values).all()


def test_cli_check_shows_the_conditional_faces_program():
    from energyql.cli import app

    result = CliRunner().invoke(app, ["check", "pose(yaw in -30..30) & keep(identity)",
                                      "--gen", "stylegan2-ffhq"])
    assert result.exit_code == 0, result.output
    assert "face-pose" in result.output and "facenet" in result.output


@pytest.fixture(scope="module")
def tiny_faces(tmp_path_factory):
    """Paths of a tiny random StyleGAN2 (faces world) and a random FaceNet."""
    from energyql.generators.stylegan2 import StyleGAN2
    from tests.generators.sg2_helpers import seeded_state_dict

    folder = tmp_path_factory.mktemp("face_pose_models")
    net = StyleGAN2(16, 16, 2, channels={2 ** i: 8 for i in range(2, 11)})
    net.load_state_dict(seeded_state_dict(net.state_dict(), 5))
    generator = folder / "tiny-sg2.pt"
    torch.save({"g_ema": net.state_dict(), "latent_avg": torch.zeros(16)}, generator)
    return generator, save_random_facenet(folder / "facenet.pt", with_logits=False)


def test_conditional_run_on_a_tiny_face_generator_trains_saves_and_samples(tiny_faces, tmp_path,
                                                                          monkeypatch):
    from energyql.cli import app
    from energyql.training import TrainConfig, train_program

    generator, facenet = tiny_faces
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    monkeypatch.setenv("ENERGYQL_FACENET", str(facenet))
    gen = f"stylegan2:{generator}"
    out = tmp_path / "art"
    config = TrainConfig(steps=4, batch=2, lr=1e-3, blocks=2, width=32, threads=1,
                         checkpoint_every=2)
    artifact = train_program("pose(yaw in -20..20) & keep(identity)", gen, config, out=out,
                             progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["stages"][0]
    assert record["context"] == [{"control": "pose", "name": "yaw", "low": -20.0, "high": 20.0}]
    assert math.isfinite(record["final_loss"]) and record["train"]["skipped_steps"] == 0
    # The same seed without steps gives the untrained flow: training moved it.
    untrained = train_program("pose(yaw in -20..20) & keep(identity)", gen,
                              replace(config, steps=0),
                              progress=False).sampler.stages[0].flow.state_dict()
    trained = artifact.sampler.stages[0].flow.state_dict()
    assert any(not torch.equal(trained[k], untrained[k]) for k in trained)

    loaded = eq.load(out)
    at_ten = loaded.sample(3, seed=0, context={"yaw": 10.0})
    assert at_ten.shape == (3, 3, 16, 16) and torch.isfinite(at_ten).all()
    assert at_ten.min() >= 0 and at_ten.max() <= 1
    assert torch.equal(at_ten, artifact.sample(3, seed=0, context={"yaw": 10.0}))
    assert not torch.equal(at_ten, loaded.sample(3, seed=0, context={"yaw": -10.0}))

    result = CliRunner().invoke(app, ["sample", str(out), "-n", "2", "--set", "yaw=10",
                                      "--out", str(tmp_path / "yaw10.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "yaw10.png").is_file()
