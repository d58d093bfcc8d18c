"""Catalogs: what names a generator's world offers, and which control model backs each.

A catalog is plain data (no torch): attributes with their values, aliases for attributes and
values, conditional controls with their parameters and ranges, and what can be kept fixed
across a conditional sweep. Checking an expression needs only its catalog, never weights.

The catalogs of real-photograph generators (faces, generic, ImageNet) are defined here; each
embedded world's lives in its :class:`~energyql.worlds.World` record. :data:`CATALOGS` reads
both: every catalog by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from energyql.errors import check_choice

# Values of a binary attribute, in the order a classifier's two outputs use.
BINARY_VALUES = ("no", "yes")


@dataclass(frozen=True)
class Attribute:
    """A discrete property of an image that a control model can classify.

    Arguments:
        name: the attribute's name in expressions, e.g. ``"color"``.
        values: its values in the order the backing model's outputs use.
        model: which control model predicts it (e.g. ``"shapes-classifier"``).
        binary: a yes/no attribute that may stand bare as a predicate (``smiling``).
        labels: human-readable labels per value, where the name is not enough (``"20-29"``).
        value_aliases: extra spellings of values, e.g. ``{"man": "male"}``.
    """

    name: str
    values: tuple[str, ...]
    model: str
    binary: bool = False
    labels: tuple[str, ...] = ()
    value_aliases: tuple[tuple[str, str], ...] = ()
    description: str = ""

    def resolve_value(self, name: str) -> str | None:
        """Return the canonical value that ``name`` spells, or None."""
        if name in self.values:
            return name
        return dict(self.value_aliases).get(name)

    def label(self, value: str) -> str:
        """Return the display label of ``value``."""
        if self.labels:
            return self.labels[self.values.index(value)]
        return value


@dataclass(frozen=True)
class Parameter:
    """A continuous parameter of a conditional control, e.g. ``yaw`` in degrees."""

    name: str
    low: float
    high: float
    unit: str = ""


@dataclass(frozen=True)
class Control:
    """A conditional control (``pose(...)``) whose parameters become a flow's context."""

    name: str
    parameters: tuple[Parameter, ...]
    model: str
    description: str = ""

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)


# Where a CLIP energy augments: at the generator's resolution, or at CLIP's input size.
AUGMENT_AT = ("full", "clip")


@dataclass(frozen=True)
class ClipSettings:
    """How a world's ``clip(...)`` energies judge images (weight, augmentation, copies).

    Arguments:
        weight: ``w`` in ``w · (1 − cos)``; None uses the CLIP model's own logit scale.
        copies: augmented copies per image (the training setting ``clip_copies``).
        augment: keyword options for :func:`energyql.controls.augment.augment`.
        augment_at: ``"full"`` augments at the generator's resolution and then resizes to
            CLIP's input (PromptGen); ``"clip"`` resizes first, then augments (cheaper).
    """

    weight: float | None = None
    copies: int = 8
    augment: tuple[tuple[str, object], ...] = ()
    augment_at: str = "clip"

    def __post_init__(self) -> None:
        check_choice(self.augment_at, AUGMENT_AT, what="augment_at setting")

    @property
    def augment_options(self) -> dict[str, object]:
        return dict(self.augment)

# PromptGen's CLIP energy on real photographs: 600 · (1 − cos) averaged over 50 DiffAugment
# copies ("color,translation,cutout": brightness ±0.5, saturation ×[0, 2], contrast
# ×[0.5, 1.5], shifts up to 1/8 of the side, a cutout of half the side), augmented at the
# generator's resolution and then resized. No rotation or zoom: DiffAugment has none.
PROMPTGEN_CLIP = ClipSettings(
    weight=600.0, copies=50, augment_at="full",
    augment=(("translate", 0.125), ("scale", (1.0, 1.0)), ("rotate_degrees", 0.0),
             ("cutout", 0.5), ("brightness", 0.5), ("contrast", 0.5), ("saturation", 1.0)))


@dataclass(frozen=True)
class Catalog:
    """Everything an expression may name for one world of generators.

    Every ``model`` it names (attributes' and controls' models, keepables, ``clip_model``) is a
    key of :mod:`energyql.controls.registry`, which maps it to a loader.
    """

    name: str
    attributes: tuple[Attribute, ...]
    aliases: tuple[tuple[str, tuple[str, ...]], ...] = ()
    controls: tuple[Control, ...] = ()
    keepables: tuple[tuple[str, str], ...] = ()  # (name, backing model)
    clip_model: str = ""
    clip: ClipSettings = ClipSettings()
    description: str = ""
    _by_name: dict[str, Attribute] = field(default_factory=dict, init=False, compare=False,
                                           hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {a.name: a for a in self.attributes})

    def attribute(self, name: str) -> Attribute | None:
        return self._by_name.get(name)

    def alias(self, name: str) -> tuple[str, ...] | None:
        """Return the attribute product an alias stands for, e.g. ``("gender",)``."""
        return dict(self.aliases).get(name)

    def control(self, name: str) -> Control | None:
        return next((c for c in self.controls if c.name == name), None)

    def keepable(self, name: str) -> str | None:
        return dict(self.keepables).get(name)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    @property
    def attribute_models(self) -> tuple[str, ...]:
        """The keys of the models behind its attributes, in first-use order."""
        return tuple(dict.fromkeys(a.model for a in self.attributes))


def binary(name: str, model: str, description: str) -> Attribute:
    """Return a yes/no attribute that may stand bare as a predicate (``smiling``)."""
    return Attribute(name, BINARY_VALUES, model, binary=True, description=description)


_FAIRFACE_RACES = (
    "white", "black", "latino_hispanic", "east_asian", "southeast_asian", "indian",
    "middle_eastern",
)
_FAIRFACE_AGES = (
    "age_0_2", "age_3_9", "age_10_19", "age_20_29", "age_30_39", "age_40_49", "age_50_59",
    "age_60_69", "age_70_plus",
)
_FAIRFACE_AGE_LABELS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")

FACES = Catalog(
    name="faces",
    description="Human faces (FFHQ-like): FairFace race/age/gender and binary face attributes.",
    attributes=(
        Attribute("race", _FAIRFACE_RACES, "face-attributes",
                  labels=("White", "Black", "Latino/Hispanic", "East Asian", "Southeast Asian",
                          "Indian", "Middle Eastern"),
                  value_aliases=(("asian", "east_asian"), ("latino", "latino_hispanic"),
                                 ("hispanic", "latino_hispanic"))),
        Attribute("age", _FAIRFACE_AGES, "face-attributes", labels=_FAIRFACE_AGE_LABELS,
                  value_aliases=(("baby", "age_0_2"), ("child", "age_3_9"),
                                 ("teen", "age_10_19"), ("senior", "age_70_plus"))),
        Attribute("gender", ("male", "female"), "face-attributes",
                  value_aliases=(("man", "male"), ("woman", "female"))),
        binary("smiling", "face-attributes", "the person smiles"),
        binary("glasses", "face-attributes", "wears eyeglasses or sunglasses"),
        binary("beard", "face-attributes", "has a beard"),
        binary("makeup", "face-attributes", "wears visible makeup"),
        binary("blond_hair", "face-attributes", "has blond hair"),
    ),
    controls=(
        Control(
            "pose",
            (Parameter("yaw", -45.0, 45.0, "degrees"), Parameter("pitch", -30.0, 30.0, "degrees")),
            model="face-pose",
            description="head pose from MTCNN landmarks",
        ),
    ),
    keepables=(("identity", "facenet"),),
    clip_model="ViT-B-32:openai",
    clip=PROMPTGEN_CLIP,
)

GENERIC = Catalog(
    name="generic",
    description="Any image domain: text control through CLIP only, no attribute classifiers.",
    attributes=(),
    clip_model="ViT-B-32:openai",
    clip=PROMPTGEN_CLIP,
)

# --- the ImageNet world's ``class`` attribute (BigGAN's labels) -----------------------------------


def identifier(name: str) -> str:
    """Return the expression spelling of an ImageNet class name: lower snake case."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@lru_cache(maxsize=1)
def class_values() -> tuple[str, ...]:
    """Return the 1000 ImageNet value names in label order, unique.

    Values are the class names in snake case (``golden_retriever``); the few names ImageNet
    uses twice (``crane`` the bird and the machine, ``maillot``) get their label index appended
    to the second (``crane_517``).
    """
    from energyql.imagenet_classes import NAMES

    seen: set[str] = set()
    values = []
    for index, name in enumerate(NAMES):
        value = identifier(name)
        if value in seen:
            value = f"{value}_{index}"
        seen.add(value)
        values.append(value)
    return tuple(values)


def class_attribute(model: str = "clip-zero-shot") -> Attribute:
    """Return the attribute ``class`` over the 1000 ImageNet classes (also ``imagenet_<i>``)."""
    from energyql.imagenet_classes import NAMES

    values = class_values()
    return Attribute(
        "class", values, model, labels=NAMES,
        value_aliases=tuple((f"imagenet_{i}", v) for i, v in enumerate(values)),
        description="the ImageNet-1k class of the image (BigGAN's label)")


IMAGENET = Catalog(name="imagenet", attributes=(class_attribute(),),
                   aliases=(("label", ("class",)), ("category", ("class",))),
                   clip_model="ViT-B-32:openai", clip=PROMPTGEN_CLIP,
                   description="ImageNet-1k (BigGAN): the class of the image, judged by CLIP.")

#: The catalogs defined here, for generators that are not embedded worlds.
BUILTIN_CATALOGS: dict[str, Catalog] = {c.name: c for c in (FACES, GENERIC, IMAGENET)}


class _Catalogs(Mapping[str, Catalog]):
    """Every catalog by name: each registered world's (read live), then the built-in ones."""

    def _all(self) -> dict[str, Catalog]:
        from energyql.worlds import registered

        return {**{name: world.catalog for name, world in registered().items()},
                **BUILTIN_CATALOGS}

    def __getitem__(self, name: str) -> Catalog:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return f"CATALOGS({', '.join(self)})"


CATALOGS: Mapping[str, Catalog] = _Catalogs()
