"""A CelebA-style binary attribute classifier: one backbone, one logit head per attribute.

PromptGen controls binary face attributes (smiling, eyeglasses, ...) with such a classifier and
the energy ``100 · −log p``; the model here declares that weight in ``energy_weights``, which
lowering applies to predicates on its attributes. Weights come from a local file (safetensors or
a plain ``.pt`` state dict) with keys ``backbone.*`` (a torchvision ResNet-18 without its ``fc``)
and ``heads.NAME.weight`` / ``heads.NAME.bias`` (``Linear(512, 1)``) per attribute. ``NAME`` is a
catalog attribute (``smiling``) or a CelebA column (``Smiling``, ``Eyeglasses``, ``No_Beard``...).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from energyql.errors import EnergyQLError, WeightsMissingError

# PromptGen's weight of a classifier energy: 100 · −log p.
ENERGY_WEIGHT = 100.0
# CelebA's column names for the faces catalog's binary attributes; a True flag means the column
# is the attribute's negation (CelebA has "No_Beard", not "Beard").
CELEBA_COLUMNS: dict[str, tuple[str, bool]] = {
    "Smiling": ("smiling", False), "Eyeglasses": ("glasses", False), "No_Beard": ("beard", True),
    "Heavy_Makeup": ("makeup", False), "Blond_Hair": ("blond_hair", False),
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def build_backbone() -> tuple[nn.Module, int]:
    """Return an untrained ResNet-18 without its classifier, and its feature width."""
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    width = net.fc.in_features
    net.fc = nn.Identity()
    return net, width


class BinaryAttributeClassifier(nn.Module):
    """Images in [0, 1] -> ``{attribute: log-probabilities (B, 2)}`` ordered ``(no, yes)``.

    Arguments:
        backbone: maps normalised ``image_size`` images to features ``(B, width)``.
        width: the feature width.
        heads: head names (catalog attributes or CelebA columns, see :data:`CELEBA_COLUMNS`).
        image_size: the side the backbone sees.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, backbone: nn.Module, width: int, heads: tuple[str, ...], *,
                 image_size: int = 224):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({name: nn.Linear(width, 1) for name in heads})
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # head name -> (attribute, negated)
        self.attributes = {h: CELEBA_COLUMNS.get(h, (h, False)) for h in heads}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a for a, _ in self.attributes.values())

    @property
    def energy_weights(self) -> dict[str, float]:
        return {name: ENERGY_WEIGHT for name in self.names}

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: batch norm keeps its statistics

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = F.interpolate(images.float(), size=(self.image_size, self.image_size),
                          mode="bilinear", align_corners=False,
                          antialias=images.shape[-1] > self.image_size)
        features = self.backbone((x - self.mean) / self.std)
        out: dict[str, torch.Tensor] = {}
        for head, (name, negated) in self.attributes.items():
            logit = self.heads[head](features)[:, 0]
            yes = -logit if negated else logit
            # log σ(−l), log σ(l): the two classes of a logistic output, in (no, yes) order.
            out[name] = torch.stack([F.logsigmoid(-yes), F.logsigmoid(yes)], dim=-1)
        return out


def _head_names(state: dict[str, torch.Tensor]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(k.split(".")[1] for k in state if k.startswith("heads.")))


def load_celeba_classifier(path: str | Path, *, device: str = "cpu") -> BinaryAttributeClassifier:
    """Return the classifier stored at ``path`` (see the module docstring for its layout)."""
    from energyql.controls.faces import _load_strict, _read_state_dict

    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsMissingError(f"CelebA attribute classifier '{path}' not found",
                                  hint="give a safetensors or .pt state dict with backbone.* "
                                       "and heads.NAME.* keys (see docs/controls.md)")
    state = _read_state_dict(path, "a binary attribute classifier state dict")
    heads = _head_names(state)
    if not heads:
        raise EnergyQLError(f"{path} has no heads.NAME.weight keys",
                            hint="each binary attribute needs a Linear(512, 1) head 'heads.NAME'")
    backbone, width = build_backbone()
    model = BinaryAttributeClassifier(backbone, width, heads)
    _load_strict(model, state, path,
                 "a ResNet-18 backbone with one Linear(512, 1) head per attribute")
    return model.eval().requires_grad_(False).to(device)


def load_celeba_attributes(catalog, *, device: str = "cpu",
                           path: str | Path | None = None) -> BinaryAttributeClassifier:
    """Return the classifier (registry key ``celeba-attributes``) for a catalog's binary attributes.

    ``path`` defaults to ``$ENERGYQL_CELEBA_CLASSIFIER``; heads that are not binary attributes of
    the catalog are refused, naming the ones it has.
    """
    from energyql.controls.attributes import ENV_CELEBA

    where = path or os.environ.get(ENV_CELEBA, "").strip()
    if not where:
        raise WeightsMissingError("no CelebA attribute classifier is configured",
                                  hint=f"set {ENV_CELEBA}=PATH to a local classifier file")
    model = load_celeba_classifier(where, device=device)
    binary = [a.name for a in catalog.attributes if a.binary]
    for name in model.names:
        if name not in binary:
            raise EnergyQLError(f"the classifier's head '{name}' is not a binary attribute of the "
                                f"'{catalog.name}' world",
                                hint="its binary attributes: " + ", ".join(binary))
    return model
