"""Face pose (yaw, pitch) from MTCNN's five landmarks: differentiable, with no 3D face model.

The pipeline, for [0, 1] images ``(B, 3, H, W)`` of aligned faces:

1. cut a fixed square box (FFHQ-aligned faces by default) and resize it to 48x48 with an
   antialiased bilinear filter (differentiable; MTCNN itself uses area averaging);
2. run MTCNN's O-Net (its weights ship inside facenet-pytorch) on it, standardised as MTCNN
   does (``(255·x − 127.5) / 128``); it returns five landmarks relative to the box: the eye
   centres, the nose tip and the mouth corners, image-left first;
3. read yaw and pitch off the landmarks with a weak-perspective head model (:class:`HeadModel`).

The head model, in inter-ocular distances (IOD), x to the image's right, y down, z towards the
camera: eyes at (±0.5, 0, 0), nose tip at (0, 0.57, 0.40), mouth corners at (±0.415, 1.16, 0).
The in-plane layout is the mean frontal 5-point layout used to align faces for recognition
(e.g. the ArcFace 112x112 template); the nose depth is an anthropometric estimate. A pose is
``R = R_yaw · R_pitch`` (pitch about the head's ear-to-ear axis, then yaw about the image's
vertical), followed by an in-plane roll, a scale and a shift. Then, with the landmarks expressed
in the frame of the eye line (origin at the eye midpoint, y towards the mouth):

    pitch = atan((N − M · r) / d)           r = nose_y / mouth_y   (N = 0.57, M = 1.16, d = 0.40)
    yaw   = atan(o · cos(pitch) / (d · D))  D = eye distance, o = the nose's offset from the line
                                            through the eye midpoint and the mouth midpoint

which inverts the model exactly for any yaw, pitch, roll, scale and shift. Signs: ``yaw > 0``
turns the face towards the image's right (the person's own left); ``pitch > 0`` tilts it up.

Accuracy limits (see docs/conditional.md): not compared with measured poses here; pitch is
confounded with expression (a smile raises the mouth corners and reads as looking down: a
frontal smiling face read −30°) and weakly determined by five landmarks; O-Net expects the box
of its own detector, so a fixed box is an approximation; landmark yaw is expected to saturate
beyond about ±45° as the far eye disappears.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from energyql.controls.faces import (
    FFHQ_CROP,
    FaceCrop,
    _load_strict,
    _read_state_dict,
    import_facenet,
)
from energyql.errors import EnergyQLError, WeightsMissingError

# O-Net's input: a 48x48 square. MTCNN's face boxes on FFHQ-aligned images are close to the
# region the FaceNet crop covers (brow to chin, cheek to cheek), so that region is the default.
ONET_SIZE = 48
FFHQ_FACE_BOX = FaceCrop(top=FFHQ_CROP.top, left=FFHQ_CROP.left, side=FFHQ_CROP.side,
                         size=ONET_SIZE)

# Landmark order of O-Net's outputs.
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class HeadModel:
    """Nominal 3D positions of the five landmarks, in inter-ocular distances.

    Arguments:
        nose_drop: the nose tip's height below the eye line (N).
        mouth_drop: the mouth corners' height below the eye line (M).
        mouth_half_width: half the distance between the mouth corners.
        nose_depth: how far the nose tip stands in front of the eyes' and mouth's plane (d).
    """

    nose_drop: float = 0.57
    mouth_drop: float = 1.16
    mouth_half_width: float = 0.415
    nose_depth: float = 0.40

    def points(self) -> torch.Tensor:
        """Return the five landmarks ``(5, 3)``: x right, y down, z towards the camera."""
        m, w = self.mouth_drop, self.mouth_half_width
        return torch.tensor([[-0.5, 0.0, 0.0], [0.5, 0.0, 0.0],
                             [0.0, self.nose_drop, self.nose_depth], [-w, m, 0.0], [w, m, 0.0]])

    def project(self, yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor | float = 0.0,
                scale: float = 1.0) -> torch.Tensor:
        """Return the 2D landmarks ``(B, 5, 2)`` of heads at these angles (degrees).

        Weak perspective: rotate by ``R_yaw · R_pitch``, drop z, roll in the image plane,
        scale. Positive yaw turns the nose to the image's right, positive pitch turns it up.
        """
        yaw = torch.as_tensor(yaw, dtype=torch.float32)
        pitch = torch.as_tensor(pitch, dtype=torch.float32)
        roll = torch.as_tensor(roll, dtype=torch.float32).expand_as(yaw)
        a, b, c = (torch.deg2rad(v).reshape(-1, 1) for v in (yaw, pitch, roll))
        x, y, z = self.points().unbind(-1)
        # Pitch about the x axis (up is -y), then yaw about the vertical axis.
        y1 = y * torch.cos(b) - z * torch.sin(b)
        z1 = y * torch.sin(b) + z * torch.cos(b)
        x2 = x * torch.cos(a) + z1 * torch.sin(a)
        u = x2 * torch.cos(c) - y1 * torch.sin(c)
        v = x2 * torch.sin(c) + y1 * torch.cos(c)
        return scale * torch.stack([u, v], dim=-1)


HEAD = HeadModel()


def pose_from_landmarks(points: torch.Tensor, head: HeadModel = HEAD) -> dict[str, torch.Tensor]:
    """Return ``{"yaw", "pitch"}`` in degrees, each ``(B,)``, from landmarks ``(B, 5, 2)``.

    The landmarks are image coordinates (x right, y down; any unit, equal in x and y) in
    O-Net's order: image-left eye, image-right eye, nose tip, image-left and image-right
    mouth corners. Differentiable; finite for any input.

    Example:
        >>> frontal = HEAD.project(torch.zeros(1), torch.zeros(1))
        >>> {k: round(float(v), 3) + 0.0 for k, v in pose_from_landmarks(frontal).items()}
        {'yaw': 0.0, 'pitch': 0.0}
    """
    left_eye, right_eye, nose, mouth_left, mouth_right = points.float().unbind(-2)
    axis = right_eye - left_eye
    eye_distance = torch.sqrt((axis ** 2).sum(-1) + 1e-12)  # D
    u = axis / eye_distance.unsqueeze(-1)  # along the eye line
    v = torch.stack([-u[..., 1], u[..., 0]], dim=-1)  # perpendicular, towards the mouth
    centre = (left_eye + right_eye) / 2

    def frame(p):
        d = p - centre
        return (d * u).sum(-1), (d * v).sum(-1)

    nose_x, nose_y = frame(nose)
    mouth_x, mouth_y = frame((mouth_left + mouth_right) / 2)
    mouth_y = mouth_y.clamp(min=1e-3 * eye_distance)  # the mouth must lie below the eyes
    n, m, d = head.nose_drop, head.mouth_drop, head.nose_depth
    pitch = torch.atan2(n * mouth_y - m * nose_y, d * mouth_y)
    offset = nose_x - mouth_x * nose_y / mouth_y  # from the eye-mouth midline, at the nose
    yaw = torch.atan2(offset * torch.cos(pitch), d * eye_distance)
    return {"yaw": yaw * (180 / math.pi), "pitch": pitch * (180 / math.pi)}


class ONetLandmarks(nn.Module):
    """MTCNN's O-Net on 48x48 [0, 1] faces: landmarks ``(B, 5, 2)`` as fractions of the box
    (x, y) and the face probability ``(B,)``.

    Arguments:
        net: a facenet-pytorch ``ONet`` with its weights loaded.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)  # frozen

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if faces.shape[-2:] != (ONET_SIZE, ONET_SIZE):
            raise ValueError(f"O-Net takes {ONET_SIZE}x{ONET_SIZE} faces, "
                             f"got {tuple(faces.shape[-2:])}")
        # MTCNN standardises 0..255 pixels as (x − 127.5) · 0.0078125.
        _, marks, probs = self.net((faces.float() * 255.0 - 127.5) * 0.0078125)
        return torch.stack([marks[:, :5], marks[:, 5:]], dim=-1), probs[:, 1]


class FacePoseEstimator(nn.Module):
    """Return ``{"yaw", "pitch"}`` readings in degrees, each ``(B,)``, for [0, 1] face images.

    Differentiable in the images; backs ``pose(yaw in ..., pitch in ...)`` on the faces world.

    Arguments:
        landmarks: the O-Net wrapper.
        box: where the face is (fractions of the image) and the side O-Net sees (48).
        head: the head model that turns landmarks into angles.

    Example:
        >>> estimator = load_face_pose()                     # doctest: +SKIP
        >>> estimator(images)["yaw"]                         # doctest: +SKIP
    """

    def __init__(self, landmarks: ONetLandmarks, box: FaceCrop = FFHQ_FACE_BOX,
                 head: HeadModel = HEAD):
        super().__init__()
        if box.size != ONET_SIZE:
            raise EnergyQLError(f"the face box must be resized to {ONET_SIZE} pixels for O-Net, "
                                f"not {box.size}")
        self.onet = landmarks
        self.box = box
        self.head = head

    def train(self, mode: bool = True):
        return super().train(False)  # frozen

    def landmarks(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the landmarks ``(B, 5, 2)`` in fractions of the image (x of the width, y of
        the height) and O-Net's face probability ``(B,)``."""
        points, prob = self.onet(self.box(images.float()))
        shift = points.new_tensor([self.box.left, self.box.top])
        return shift + points * self.box.side, prob

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        points, _ = self.landmarks(images)
        # Back to pixels so that x and y share one unit on non-square images.
        h, w = images.shape[-2:]
        return pose_from_landmarks(points * points.new_tensor([w, h]), self.head)


def onet_weights_path() -> Path:
    """Where facenet-pytorch keeps O-Net's weights (inside the installed package)."""
    return Path(import_facenet().__file__).parent / "data" / "onet.pt"


def load_face_pose(device: str | torch.device = "cpu", *, box: FaceCrop = FFHQ_FACE_BOX,
                   path: str | Path | None = None) -> FacePoseEstimator:
    """Return the face pose estimator, frozen and in eval mode.

    Arguments:
        device: where it runs.
        box: where the face is in the images (FFHQ-aligned faces by default).
        path: an O-Net state dict (default: the one inside facenet-pytorch).
    """
    path = Path(path).expanduser() if path is not None else onet_weights_path()
    if not path.is_file():
        raise WeightsMissingError(f"MTCNN O-Net weights not found at {path}",
                                  hint="they ship inside facenet-pytorch: "
                                       "pip install --force-reinstall \"energyql[faces]\"")
    net = import_facenet("facenet_pytorch.models.mtcnn").ONet(pretrained=False)
    _load_strict(net, _read_state_dict(path, "an MTCNN O-Net state dict"), path,
                 "MTCNN's O-Net (facenet-pytorch)")
    return FacePoseEstimator(ONetLandmarks(net), box).to(device)
