"""Attribute models: images in [0, 1] -> per-attribute log-probabilities over catalog values.

Which model backs an attribute is catalog data (``Attribute.model``, a key of
:mod:`energyql.controls.registry`). The faces world's ``face-attributes`` judge, like PromptGen,
takes race, gender and age from FairFace's ResNet-34 when its weights are present, and the other
attributes from CLIP zero-shot classification (a prompt ensemble per value, any CLIP):

    ENERGYQL_FACE_ATTRIBUTES=auto            # the default: FairFace if its weights are in the
                                             # cache, else CLIP zero-shot with a notice
    ENERGYQL_FACE_ATTRIBUTES=clip            # CLIP zero-shot for every attribute
    ENERGYQL_FACE_ATTRIBUTES=fairface        # FairFace from the cache (downloaded if allowed)
    ENERGYQL_FACE_ATTRIBUTES=fairface:PATH   # FairFace from a local checkpoint
    ENERGYQL_CELEBA_CLASSIFIER=PATH          # binary attributes (smiling, ...) from a CelebA-style
                                             # classifier, as PromptGen's classifier energy
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from energyql.catalog import CATALOGS, Catalog
from energyql.controls import registry
from energyql.errors import EnergyQLError

if TYPE_CHECKING:
    from energyql.controls.faces import FairFaceClassifier

ENV_FACE_ATTRIBUTES = "ENERGYQL_FACE_ATTRIBUTES"
ENV_CELEBA = "ENERGYQL_CELEBA_CLASSIFIER"
FACE_BACKENDS = ("auto", "clip", "fairface")


class AttributeModel(nn.Module):
    """Maps images to ``{attribute: log-probabilities (B, K)}`` in catalog value order."""

    catalog: Catalog
    # One-line notices about how it judges (e.g. a fallback), for warnings and the manifest.
    notices: tuple[str, ...] = ()

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
    groups: Sequence[tuple[str, ...]]
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

    def __init__(self, fairface: FairFaceClassifier, catalog: Catalog, clip_loader):
        super().__init__()
        self.fairface = fairface
        self.catalog = catalog
        self._clip_loader = clip_loader
        self._rest = tuple(n for n in catalog.attribute_names if n not in fairface.attribute_names)
        # A list keeps it out of .to() and .parameters().
        self._zero_shot: list[ClipZeroShotAttributes] = []

    def zero_shot(self) -> ClipZeroShotAttributes:
        if not self._zero_shot:
            zero_shot = ClipZeroShotAttributes(self._clip_loader(), self.catalog, self._rest)
            self._zero_shot.append(zero_shot)
        return self._zero_shot[0]

    def forward(self, images: torch.Tensor) -> Mapping[str, torch.Tensor]:
        primary = {k: F.log_softmax(v.float(), -1) for k, v in self.fairface(images).items()}
        fallback = (lambda: self.zero_shot()(images)) if self._rest else None
        return _LazyLogProbs(primary, fallback, self.catalog.attribute_names)


class MergedAttributes(AttributeModel):
    """Several attribute models as one: each attribute from the first model that provides it.

    A model runs only when one of its attributes is read, once per batch. ``energy_weights``
    (a model's weight for its predicates' energies, e.g. 100 for a CelebA classifier) and
    ``notices`` are gathered from the models.

    Arguments:
        sources: ``(attribute names, model)`` pairs, preferred first.
        catalog: the world's catalog.
    """

    def __init__(self, sources: Sequence[tuple[Sequence[str], nn.Module]], catalog: Catalog):
        super().__init__()
        self.catalog = catalog
        self.models = nn.ModuleList([m for _, m in sources])
        self.owner: dict[str, int] = {}
        for i, (names, _) in enumerate(sources):
            for name in names:
                self.owner.setdefault(name, i)
        self.energy_weights = {n: w for n, i in self.owner.items()
                               for k, w in getattr(self.models[i], "energy_weights", {}).items()
                               if k == n}
        self.notices = tuple(n for m in self.models for n in getattr(m, "notices", ()))

    def forward(self, images: torch.Tensor) -> Mapping[str, torch.Tensor]:
        return _MergedLogProbs(self, images)


class _MergedLogProbs(Mapping):
    def __init__(self, merged: MergedAttributes, images: torch.Tensor):
        self._merged, self._images = merged, images
        self._outputs: dict[int, Mapping[str, torch.Tensor]] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        index = self._merged.owner[name]
        if index not in self._outputs:
            self._outputs[index] = self._merged.models[index](self._images)
        return self._outputs[index][name]

    def __iter__(self):
        return iter(self._merged.owner)

    def __len__(self) -> int:
        return len(self._merged.owner)


def default_face_attributes() -> str:
    """Return the face-attribute backend used when none is given: ``$ENERGYQL_FACE_ATTRIBUTES``,
    else ``"auto"`` (read once per :class:`~energyql.energies.ControlModels`)."""
    return os.environ.get(ENV_FACE_ATTRIBUTES, "").strip() or "auto"


def face_attribute_backend(backend: str | None = None) -> tuple[str, str | None]:
    """Return ``(kind, path)`` for a face-attribute backend (default
    :func:`default_face_attributes`).

    ``kind`` is ``"auto"``, ``"clip"`` or ``"fairface"``; see :func:`resolve_face_backend`.
    """
    raw = (backend if backend is not None else default_face_attributes()).strip() or "auto"
    kind, _, path = raw.partition(":")
    if kind not in FACE_BACKENDS or (kind != "fairface" and path):
        raise EnergyQLError(f"unknown face attribute backend '{raw}'",
                            hint=f"face_attributes (--face-attributes, {ENV_FACE_ATTRIBUTES}) "
                                 "takes 'auto', 'clip', 'fairface' or 'fairface:PATH'")
    return kind, path or None


def fairface_notice() -> str:
    """The one-line notice shown when race, age and gender fall back to CLIP zero-shot."""
    from energyql import hub

    return ("FairFace weights are not in the cache, so race, age and gender are judged by CLIP "
            "zero-shot (which shares CLIP's own biases); get FairFace with: "
            f"{hub.fetch_command('fairface-res34')}  (or set {ENV_FACE_ATTRIBUTES}=fairface:PATH)")


def resolve_face_backend(backend: str | None = None) -> tuple[str, str | None, str | None]:
    """Return ``(kind, path, notice)``: ``auto`` becomes FairFace where its weights are present."""
    from energyql import hub

    kind, path = face_attribute_backend(backend)
    if kind != "auto":
        return kind, path, None
    if hub.is_present("fairface-res34"):
        return "fairface", None, None
    return "clip", None, fairface_notice()


def load_face_attributes(catalog: Catalog, *, device: str = "cpu", clip_spec: str | None = None,
                         backend: str | None = None) -> AttributeModel:
    """Return the faces world's judge (registry key ``face-attributes``).

    Race, gender and age come from FairFace (see :func:`resolve_face_backend`), binary attributes
    from the classifier at ``$ENERGYQL_CELEBA_CLASSIFIER`` when set, the rest from CLIP zero-shot.
    Without FairFace weights it warns once, and the model's ``notices`` carry the same line.
    """
    from energyql.controls.clip import default_clip_spec, load_clip

    spec = clip_spec or default_clip_spec(catalog)
    kind, path, notice = resolve_face_backend(backend)
    if kind == "fairface":
        from energyql.controls.faces import load_fairface

        model: AttributeModel = FaceAttributes(load_fairface(path, catalog=catalog, device=device),
                                               catalog, lambda: load_clip(spec, device)).to(device)
    else:
        model = ClipZeroShotAttributes(load_clip(spec, device), catalog)
    notices = () if notice is None else (notice,)
    if notice is not None:
        warnings.warn(notice, stacklevel=2)
    if os.environ.get(ENV_CELEBA, "").strip():
        binary = registry.load("celeba-attributes", catalog, kind="attributes", device=device)
        model = MergedAttributes([(binary.names, binary), (catalog.attribute_names, model)],
                                 catalog)
    model.notices = notices + model.notices
    return model


def load_zero_shot_attributes(catalog: Catalog, *, device: str = "cpu",
                              clip_spec: str | None = None) -> AttributeModel:
    """Return CLIP zero-shot classification of every catalog attribute (key ``clip-zero-shot``)."""
    from energyql.controls.clip import default_clip_spec, load_clip

    clip = load_clip(clip_spec or default_clip_spec(catalog), device)
    return ClipZeroShotAttributes(clip, catalog)


def load_attribute_model(catalog: Catalog | str, *, device: str = "cpu",
                         clip_spec: str | None = None,
                         backend: str | None = None) -> AttributeModel:
    """Return the attribute model that backs a catalog's attributes, through the registry.

    Arguments:
        catalog: the world's catalog or its name.
        device: where the models run.
        clip_spec, backend: for the faces world's ``face-attributes``, the CLIP for zero-shot
            attributes and the FairFace/CLIP choice (see :func:`load_face_attributes`).

    A catalog whose attributes name several models gets a :class:`MergedAttributes`.
    """
    catalog = CATALOGS[catalog] if isinstance(catalog, str) else catalog
    if not catalog.attributes:
        raise EnergyQLError(f"the '{catalog.name}' world has no attributes to classify",
                            hint="use clip(...) terms, or a generator of a world with attributes")
    loaded = []
    for key in catalog.attribute_models:
        # Only the options given, and only to loaders that declare them: others stay callable.
        spec = registry.resolve(key, kind="attributes")
        options = {k: v for k, v in (("clip_spec", clip_spec), ("backend", backend))
                   if v and spec.accepts(k)}
        model = spec.load(catalog, device=device, **options)
        loaded.append((tuple(a.name for a in catalog.attributes if a.model == key), model))
    return loaded[0][1] if len(loaded) == 1 else MergedAttributes(loaded, catalog)
