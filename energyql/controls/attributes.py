"""Attribute models: images in [0, 1] -> per-attribute log-probabilities over catalog values.

The shapes world ships a trained classifier. Other worlds use CLIP zero-shot classification with
a prompt ensemble per value, which works with any CLIP. The faces world can instead take race,
gender and age from a FairFace ResNet-34 (the other face attributes stay with CLIP):

    ENERGYQL_FACE_ATTRIBUTES=clip            # the default: CLIP zero-shot for every attribute
    ENERGYQL_FACE_ATTRIBUTES=fairface        # FairFace from the cache (fairface-res34)
    ENERGYQL_FACE_ATTRIBUTES=fairface:PATH   # FairFace from a local checkpoint
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from energyql.catalog import CATALOGS, Catalog
from energyql.errors import EnergyQLError

ENV_FACE_ATTRIBUTES = "ENERGYQL_FACE_ATTRIBUTES"


class AttributeModel(nn.Module):
    """Maps images to ``{attribute: log-probabilities (B, K)}`` in catalog value order."""

    catalog: Catalog

    def forward(self, images: torch.Tensor) -> Mapping[str, torch.Tensor]:
        raise NotImplementedError


class ClassifierAttributes(AttributeModel):
    """Wraps a classifier that returns ``{attribute: logits}``."""

    def __init__(self, classifier: nn.Module, catalog: Catalog):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.catalog = catalog

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classifier(images)
        return {a.name: F.log_softmax(logits[a.name].float(), dim=-1)
                for a in self.catalog.attributes if a.name in logits}


# --- CLIP zero-shot prompts ----------------------------------------------------------------------
# Each value gets several phrasings ("subjects") and each subject several templates; the value's
# class embedding is the renormalised mean of them all (CLIP's prompt-ensembling recipe).

_TEMPLATES = ("a photo of {}.", "a close-up portrait photo of {}.", "a face of {}.")
_SUBJECTS: dict[str, dict[str, tuple[str, ...]]] = {
    "race": {
        "white": ("a white person", "a caucasian person"),
        "black": ("a black person", "an african american person"),
        "latino_hispanic": ("a latino person", "a hispanic person"),
        "east_asian": ("an east asian person", "a chinese, japanese or korean person"),
        "southeast_asian": ("a southeast asian person", "a filipino, thai or vietnamese person"),
        "indian": ("an indian person", "a south asian person"),
        "middle_eastern": ("a middle eastern person", "an arab person"),
    },
    "age": {
        "age_0_2": ("a baby", "an infant"),
        "age_3_9": ("a young child", "a kid"),
        "age_10_19": ("a teenager", "an adolescent"),
        "age_20_29": ("a person in their twenties", "a young adult"),
        "age_30_39": ("a person in their thirties", "an adult in their thirties"),
        "age_40_49": ("a person in their forties", "a middle-aged adult in their forties"),
        "age_50_59": ("a person in their fifties", "a middle-aged adult in their fifties"),
        "age_60_69": ("a person in their sixties", "an older adult in their sixties"),
        "age_70_plus": ("an elderly person over seventy", "a very old person"),
    },
    "gender": {
        "male": ("a man", "a male person"),
        "female": ("a woman", "a female person"),
    },
}
# Binary attributes: subjects for "no", then for "yes".
_BINARY_SUBJECTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "smiling": (("a person with a neutral expression", "a person who is not smiling"),
                ("a smiling person", "a person with a big smile")),
    "glasses": (("a person without glasses", "a person with bare eyes"),
                ("a person wearing glasses", "a person wearing eyeglasses")),
    "beard": (("a clean-shaven person", "a person without a beard"),
              ("a person with a beard", "a bearded person")),
    "makeup": (("a person without makeup", "a person with a bare face"),
               ("a person wearing makeup", "a person with visible makeup")),
    "blond_hair": (("a person with dark hair", "a person whose hair is not blond"),
                   ("a person with blond hair", "a blonde person")),
}


def zero_shot_prompts(attribute) -> list[tuple[str, ...]]:
    """Return one tuple of prompts per value of ``attribute``, in value order."""
    if attribute.binary:
        words = attribute.name.replace("_", " ")
        groups = _BINARY_SUBJECTS.get(attribute.name,
                                      ((f"a person without {words}",), (f"a person with {words}",)))
    else:
        known = _SUBJECTS.get(attribute.name, {})
        groups = [known.get(v, (f"{attribute.label(v)}",)) for v in attribute.values]
    return [tuple(t.format(s) for s in subjects for t in _TEMPLATES) for subjects in groups]


class ClipZeroShotAttributes(AttributeModel):
    """CLIP zero-shot classification of catalog attributes (prompt ensembles).

    Arguments:
        clip: a :class:`~energyql.controls.clip.ClipModel` or ensemble.
        catalog: the world's catalog.
        attributes: the attribute names to classify (default: all of the catalog's).
    """

    def __init__(self, clip, catalog: Catalog, attributes: tuple[str, ...] | None = None):
        super().__init__()
        self.clip = clip
        self.catalog = catalog
        self.names = tuple(attributes) if attributes is not None else catalog.attribute_names
        for name in self.names:
            prompts = zero_shot_prompts(catalog.attribute(name))
            class_embeddings = torch.stack(
                [F.normalize(clip.encode_text(list(group)).mean(0), dim=-1) for group in prompts])
            self.register_buffer(f"text_{name}", class_embeddings, persistent=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self.clip.encode_image(images)
        scale = self.clip.logit_scale
        return {name: F.log_softmax(scale * embedding @ getattr(self, f"text_{name}").T, -1)
                for name in self.names}


class _LazyLogProbs(Mapping):
    """Log-probabilities from a primary model, and from a fallback only when first asked for."""

    def __init__(self, primary: dict[str, torch.Tensor], fallback, names: tuple[str, ...]):
        self._values = dict(primary)
        self._fallback = fallback
        self._names = names

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._values and self._fallback is not None and name in self._names:
            self._values.update(self._fallback())
            self._fallback = None
        return self._values[name]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class FaceAttributes(AttributeModel):
    """FairFace for race, gender and age; CLIP zero-shot (loaded on first need) for the rest.

    Arguments:
        fairface: a :class:`~energyql.controls.faces.FairFaceClassifier`.
        catalog: the faces catalog.
        clip_loader: returns the CLIP for the other attributes; called at most once.
    """

    def __init__(self, fairface: nn.Module, catalog: Catalog, clip_loader):
        super().__init__()
        self.fairface = fairface
        self.catalog = catalog
        self._clip_loader = clip_loader
        self._rest = tuple(n for n in catalog.attribute_names if n not in fairface.attribute_names)
        self._zero_shot: list[ClipZeroShotAttributes] = []  # a list keeps it out of .to()/.parameters()

    def zero_shot(self) -> ClipZeroShotAttributes:
        if not self._zero_shot:
            self._zero_shot.append(ClipZeroShotAttributes(self._clip_loader(), self.catalog, self._rest))
        return self._zero_shot[0]

    def forward(self, images: torch.Tensor) -> Mapping[str, torch.Tensor]:
        primary = {k: F.log_softmax(v.float(), -1) for k, v in self.fairface(images).items()}
        fallback = (lambda: self.zero_shot()(images)) if self._rest else None
        return _LazyLogProbs(primary, fallback, self.catalog.attribute_names)


def face_attribute_backend(backend: str | None = None) -> tuple[str, str | None]:
    """Return ``(kind, path)`` for a face-attribute backend (default: ``$ENERGYQL_FACE_ATTRIBUTES``)."""
    raw = (backend if backend is not None else os.environ.get(ENV_FACE_ATTRIBUTES, "")).strip() or "clip"
    kind, _, path = raw.partition(":")
    if kind not in ("clip", "fairface") or (kind == "clip" and path):
        raise EnergyQLError(f"unknown face attribute backend '{raw}'",
                            hint=f"{ENV_FACE_ATTRIBUTES} takes 'clip', 'fairface' or 'fairface:PATH'")
    return kind, path or None


def load_attribute_model(catalog: Catalog | str, *, device: str = "cpu",
                         clip_spec: str | None = None, backend: str | None = None) -> AttributeModel:
    """Return the attribute model that backs a catalog's attributes.

    Arguments:
        catalog: the world's catalog or its name.
        device: where the models run.
        clip_spec: the CLIP for zero-shot attributes (default: the world's, see
            :func:`~energyql.controls.clip.default_clip_spec`).
        backend: for the faces world, ``"clip"``, ``"fairface"`` or ``"fairface:PATH"``
            (default: ``$ENERGYQL_FACE_ATTRIBUTES``, else ``"clip"``).
    """
    from energyql.controls.clip import default_clip_spec, load_clip

    catalog = CATALOGS[catalog] if isinstance(catalog, str) else catalog
    if catalog.name == "shapes":
        from energyql.worlds.shapes import classifier

        return ClassifierAttributes(classifier.load(device=device), catalog).to(device)
    if not catalog.attributes:
        raise EnergyQLError(f"the '{catalog.name}' world has no attributes to classify")
    spec = clip_spec or default_clip_spec(catalog)
    if catalog.name == "faces":
        kind, path = face_attribute_backend(backend)
        if kind == "fairface":
            from energyql.controls.faces import load_fairface

            return FaceAttributes(load_fairface(path, catalog=catalog, device=device), catalog,
                                  lambda: load_clip(spec, device)).to(device)
    return ClipZeroShotAttributes(load_clip(spec, device), catalog)
