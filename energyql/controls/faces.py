"""Face control models: FairFace attributes, FaceNet identity embeddings, the FFHQ face crop.

Weights come from the energyql cache (:mod:`energyql.hub`: ``fairface-res34``,
``facenet-vggface2``, ``facenet-casia``) or from a local path; they are loaded here as plain
state dicts (``weights_only``), never through facenet-pytorch's own downloader, so that a
machine without network access gets a clear :class:`WeightsMissingError` instead of a hang.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from energyql import hub
from energyql.errors import EnergyQLError, WeightsMissingError

ENV_FACENET = "ENERGYQL_FACENET"
FACES_INSTALL = 'pip install "energyql[faces]"'


def import_facenet(module: str = "facenet_pytorch"):
    """Return a facenet-pytorch module, or raise a clear error saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise EnergyQLError(f"the faces controls need facenet-pytorch, which failed to import "
                            f"({error})", hint=FACES_INSTALL) from None


# --- the face crop -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceCrop:
    """A fixed square crop, in fractions of the image side, resized to ``size`` pixels.

    Arguments:
        top, left: the crop's top-left corner.
        side: the crop's side.
        size: the output side in pixels.
    """

    top: float
    left: float
    side: float
    size: int = 160

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Return the crops ``(B, 3, size, size)``; differentiable in ``images``."""
        h, w = images.shape[-2:]
        y0, x0 = round(self.top * h), round(self.left * w)
        y1 = max(y0 + 1, round((self.top + self.side) * h))
        x1 = max(x0 + 1, round((self.left + self.side) * w))
        crop = images[..., max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
        return F.interpolate(crop, size=(self.size, self.size), mode="bilinear",
                             align_corners=False, antialias=crop.shape[-1] > self.size)


# FFHQ-aligned faces (StyleGAN2 on FFHQ/MetFaces) put the eyes near 47% of the height, a quarter
# of the width apart, the mouth near 70% and the chin near 87%. FaceNet was trained on MTCNN
# boxes (brow to chin, cheek to cheek) with a small margin: this square covers that region.
# measure_face_box() finds the box MTCNN itself draws on a batch of a generator's samples.
FFHQ_CROP = FaceCrop(top=0.26, left=0.2, side=0.6, size=160)


def measure_face_box(images: torch.Tensor) -> tuple[float, float, float, float] | None:
    """Return MTCNN's median face box ``(top, left, bottom, right)`` in fractions, or None.

    Use it to check or derive a :class:`FaceCrop` for a generator's faces; MTCNN's weights ship
    inside facenet-pytorch, so this works offline. Not differentiable (MTCNN runs on uint8).
    """
    detector = import_facenet().MTCNN(select_largest=True, post_process=False, device=images.device)
    h, w = images.shape[-2:]
    pixels = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    boxes, _ = detector.detect(pixels.cpu())
    found = [b[0] for b in boxes if b is not None]
    if not found:
        return None
    left, top, right, bottom = torch.tensor(found, dtype=torch.float32).median(0).values.tolist()
    return top / h, left / w, bottom / h, right / w


# --- FaceNet identity embeddings -----------------------------------------------------------------

_FACENET_KEYS = {"vggface2": "facenet-vggface2", "casia": "facenet-casia",
                 "casia-webface": "facenet-casia"}


class FaceEmbedder(nn.Module):
    """Unit FaceNet embeddings ``(B, 512)`` of [0, 1] face images; differentiable.

    Arguments:
        net: a facenet-pytorch ``InceptionResnetV1`` (embeddings, not logits).
        crop: where the face is; FFHQ-aligned faces by default.
    """

    def __init__(self, net: nn.Module, crop: FaceCrop = FFHQ_CROP):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.crop = crop

    def train(self, mode: bool = True):
        # Batch norm must keep its running statistics: embeddings of a batch must not depend
        # on the other images in it.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        faces = self.crop(images.float())
        # facenet-pytorch's fixed_image_standardization, on [0, 1] instead of [0, 255].
        faces = (faces * 255.0 - 127.5) / 128.0
        return F.normalize(self.net(faces), dim=-1)


def load_facenet(spec: str | None = None, *, device: str = "cpu",
                 crop: FaceCrop = FFHQ_CROP) -> FaceEmbedder:
    """Return the FaceNet embedder that ``spec`` names.

    Arguments:
        spec: ``"vggface2"`` (default, or ``$ENERGYQL_FACENET``), ``"casia"``, or a path to an
            ``InceptionResnetV1`` state dict (with or without its ``logits`` layer).
        device: where it runs.
        crop: where the face is in the images.
    """
    InceptionResnetV1 = import_facenet().InceptionResnetV1

    spec = spec or os.environ.get(ENV_FACENET, "").strip() or "vggface2"
    path = hub.path(_FACENET_KEYS[spec]) if spec in _FACENET_KEYS else Path(spec).expanduser()
    if not path.is_file():
        raise WeightsMissingError(
            f"FaceNet weights '{spec}' not found",
            hint="use 'vggface2' or 'casia' (from the energyql cache), or a path to an "
                 "InceptionResnetV1 state dict")
    state = _read_state_dict(path, "an InceptionResnetV1 state dict")
    # The released files carry the training classifier; embeddings do not use it.
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    net = InceptionResnetV1(pretrained=None, classify=False)
    _load_strict(net, state, path, "an InceptionResnetV1 (facenet-pytorch) state dict")
    return FaceEmbedder(net, crop).to(device)


# --- FairFace attributes ---------------------------------------------------------------------

# The 18 outputs of FairFace's res34_fair_align_multi_7 model, in order (FairFace predict.py):
# 7 races, 2 genders, 9 age bins. Names are the faces catalog's values.
FAIRFACE_OUTPUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("race", ("white", "black", "latino_hispanic", "east_asian", "southeast_asian", "indian",
              "middle_eastern")),
    ("gender", ("male", "female")),
    ("age", ("age_0_2", "age_3_9", "age_10_19", "age_20_29", "age_30_39", "age_40_49",
             "age_50_59", "age_60_69", "age_70_plus")),
)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class FairFaceClassifier(nn.Module):
    """FairFace ResNet-34: [0, 1] face images -> ``{race, gender, age: logits}`` in catalog order.

    Like PromptGen, it sees the whole FFHQ-aligned image resized to 224 px (FFHQ's alignment is
    close to the dlib face chips FairFace was trained on), normalised with ImageNet statistics.

    Arguments:
        net: a torchvision ``resnet34`` whose ``fc`` has 18 outputs.
        catalog: the catalog whose value order the logits follow.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, catalog):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.slices: dict[str, tuple[int, list[int]]] = {}
        start = 0
        for name, values in FAIRFACE_OUTPUTS:
            attribute = catalog.attribute(name)
            if attribute is None or set(attribute.values) != set(values):
                raise EnergyQLError(f"the '{catalog.name}' catalog's '{name}' does not have "
                                    f"FairFace's values {', '.join(values)}")
            self.slices[name] = (start, [values.index(v) for v in attribute.values])
            start += len(values)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(self.slices)

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: batch norm keeps its statistics

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = F.interpolate(images.float(), size=(224, 224), mode="bilinear", align_corners=False,
                          antialias=images.shape[-1] > 224)
        logits = self.net((x - self.mean) / self.std)
        return {name: logits[:, start:start + len(order)][:, order]
                for name, (start, order) in self.slices.items()}


def load_fairface(spec: str | None = None, *, catalog=None,
                  device: str = "cpu") -> FairFaceClassifier:
    """Return the FairFace classifier from a path, or from the cache (``fairface-res34``)."""
    from torchvision.models import resnet34

    from energyql.catalog import FACES

    path = Path(spec).expanduser() if spec else hub.path("fairface-res34")
    if not path.is_file():
        raise WeightsMissingError(f"FairFace checkpoint '{spec}' not found",
                                  hint="give the path to res34_fair_align_multi_7_20190809.pt, "
                                       f"or put it at {hub.location('fairface-res34')}")
    state = _read_state_dict(path, "a FairFace ResNet-34 state dict")
    net = resnet34(weights=None)
    net.fc = nn.Linear(net.fc.in_features, 18)
    _load_strict(net, state, path, "FairFace's ResNet-34 with 18 outputs (7 race, 2 gender, 9 age)")
    return FairFaceClassifier(net, catalog or FACES).to(device)


# --- shared loading ----------------------------------------------------------------------------


def _read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    state: object  # whatever the file holds, checked below
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError) as error:
        raise EnergyQLError(f"could not read {path} as {what}: {str(error).splitlines()[0][:300]}",
                            hint="the file must be a plain state dict "
                                 "(torch.save(model.state_dict())) or safetensors; "
                                 "pickled code is never run") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EnergyQLError(f"{path} is not {what}")
    # Checkpoints saved from nn.DataParallel prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_strict(net: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()
        raise EnergyQLError(f"{path} does not fit {what}: {' '.join(first[:2])[:300]}") from None
