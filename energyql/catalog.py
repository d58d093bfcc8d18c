"""Catalogs: what names a generator's world offers, and which control model backs each.

A catalog is plain data (no torch): attributes with their values, aliases for attributes and
values, conditional controls with their parameters and ranges, and what can be kept fixed
across a conditional sweep. Checking an expression needs only its catalog, never weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

# The shapes world's small CLIP: its logit scale as the weight, 4 gentle copies without colour
# jitter or cutout (colour and shape are what it must judge); measured best on shapes.
SHAPES_CLIP = ClipSettings(
    weight=None, copies=4, augment_at="clip",
    augment=(("translate", 0.08), ("scale", (0.9, 1.1)), ("rotate_degrees", 10.0),
             ("cutout", 0.0)))


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
    _by_name: dict = field(default=None, compare=False, hash=False, repr=False)  # type: ignore[assignment]

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


def _binary(name: str, model: str, description: str) -> Attribute:
    return Attribute(name, BINARY_VALUES, model, binary=True, description=description)


SHAPES = Catalog(
    name="shapes",
    description="The embedded 32x32 world of one coloured shape on a dark background.",
    attributes=(
        Attribute("shape", ("circle", "square", "triangle"), "shapes-classifier"),
        Attribute("color", ("red", "green", "blue"), "shapes-classifier"),
        Attribute("size", ("small", "large"), "shapes-classifier",
                  value_aliases=(("big", "large"), ("little", "small"))),
    ),
    aliases=(("colour", ("color",)),),
    controls=(
        Control(
            "pose",
            (
                Parameter("x", 0.2, 0.8, "image widths"),
                Parameter("y", 0.2, 0.8, "image heights"),
                Parameter("rotation", -45.0, 45.0, "degrees"),
            ),
            model="shapes-pose",
            description="position and rotation of the shape, read by the shapes pose regressor",
        ),
    ),
    keepables=(("identity", "shapes-identity"),),
    clip_model="shapes-clip",
    clip=SHAPES_CLIP,
)

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
        _binary("smiling", "face-attributes", "the person smiles"),
        _binary("glasses", "face-attributes", "wears eyeglasses or sunglasses"),
        _binary("beard", "face-attributes", "has a beard"),
        _binary("makeup", "face-attributes", "wears visible makeup"),
        _binary("blond_hair", "face-attributes", "has blond hair"),
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

# The portraits world's small CLIP: its logit scale as the weight, 4 gentle geometric copies
# and no colour jitter (skin and hair colours are what several attributes are about).
PORTRAITS_CLIP = ClipSettings(
    weight=None, copies=4, augment_at="clip",
    augment=(("translate", 0.06), ("scale", (0.95, 1.05)), ("rotate_degrees", 5.0),
             ("cutout", 0.0)))

_PORTRAITS_JUDGE = "portraits-classifier"

PORTRAITS = Catalog(
    name="portraits",
    description="The embedded 64x64 world of drawn head-and-shoulders portraits.",
    attributes=(
        Attribute("gender", ("male", "female"), _PORTRAITS_JUDGE,
                  value_aliases=(("man", "male"), ("woman", "female"))),
        Attribute("age", ("young", "adult", "old"), _PORTRAITS_JUDGE,
                  value_aliases=(("elderly", "old"), ("senior", "old"))),
        Attribute("race", ("alpha", "beta", "gamma", "delta"), _PORTRAITS_JUDGE,
                  description="four synthetic appearance groups (skin tone, hair colour and "
                              "texture)"),
        _binary("smiling", _PORTRAITS_JUDGE, "the person smiles"),
        _binary("glasses", _PORTRAITS_JUDGE, "wears glasses"),
        _binary("beard", _PORTRAITS_JUDGE, "has a beard"),
        Attribute("hair", ("black", "brown", "blond", "grey"), _PORTRAITS_JUDGE,
                  value_aliases=(("gray", "grey"), ("blonde", "blond"))),
    ),
    controls=(
        Control(
            "pose",
            (Parameter("yaw", -30.0, 30.0, "degrees"), Parameter("pitch", -20.0, 20.0, "degrees")),
            model="portraits-pose",
            description="head yaw and pitch, read by the portraits judge",
        ),
    ),
    keepables=(("identity", "portraits-identity"),),
    clip_model="portraits-clip",
    clip=PORTRAITS_CLIP,
)


def _imagenet() -> Catalog:
    from energyql.generators.imagenet import class_attribute

    return Catalog(name="imagenet", attributes=(class_attribute(),),
                   aliases=(("label", ("class",)), ("category", ("class",))),
                   clip_model="ViT-B-32:openai", clip=PROMPTGEN_CLIP,
                   description="ImageNet-1k (BigGAN): the class of the image, judged by CLIP.")


IMAGENET = _imagenet()

CATALOGS: dict[str, Catalog] = {c.name: c for c in (SHAPES, PORTRAITS, FACES, GENERIC, IMAGENET)}
