"""The options generator families take, declared once (torch-free).

Every option a loader of the StyleGAN2, BigGAN, diffusion or text-to-image family accepts is
declared here:
its name, kind, range and families, and whether it may travel in a manifest and on the command
line (``--gen-option KEY=VALUE``). The loaders, ``energyql run`` and the manifest reader all
check options with :func:`check_options`, so a bad value is the same
:class:`~energyql.errors.UsageError` (exit 2) for every family, before anything is loaded.

Example:
    >>> check_options("diffusion", {"steps": 25.0})
    {'steps': 25}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from energyql.errors import UsageError, did_you_mean

#: The longest ``"text"`` option (a prompt): a CLIP text encoder reads 77 tokens, a few hundred
#: characters, and cuts the rest; the manifest records text options up to this length.
MAX_TEXT = 1000


@dataclass(frozen=True)
class GeneratorOption:
    """One loader option.

    Arguments:
        name: the keyword the loader takes.
        kind: ``"int"``, ``"float"``, ``"bool"``, ``"choice"`` (one of ``choices``),
            ``"class"`` (an index from 0 or a non-empty name) or ``"text"`` (a string of at
            most :data:`MAX_TEXT` characters without control characters, empty allowed).
        families: the generator families that take it (none for one generator's own
            option, declared in its spec's ``options``).
        low, high: the finite range of a number (``low`` excluded when ``low_open``).
        recorded: whether it shapes the generator, so that a manifest records it and
            ``--gen-option`` may set it (``checkpointing`` only trades memory for time).
    """

    name: str
    kind: str
    families: tuple[str, ...]
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    recorded: bool = True
    help: str = ""

    def check(self, value: object, where: str) -> object:
        """Return ``value`` in this option's type if it is valid, else raise UsageError."""
        def refuse(rule: str) -> UsageError:
            return UsageError(f"generator option {self.name}={value!r} {rule}",
                              hint=f"{self.name}: {self.help}" if self.help else None)

        if self.kind == "bool":
            if not isinstance(value, bool):
                raise refuse("must be true or false")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                # Choices with spaces (a world's prompts) are quoted; the hint names the closest.
                shown = (f'"{c}"' if " " in c else c for c in self.choices)
                close = did_you_mean(str(value), self.choices)
                raise UsageError(f"generator option {self.name}={value!r} must be one of "
                                 + ", ".join(shown),
                                 hint=" ".join(p for p in (close, f"{self.name}: {self.help}"
                                                           if self.help else "") if p) or None)
            return value
        if self.kind == "text":
            if not isinstance(value, str):
                raise refuse("must be text")
            if len(value) > MAX_TEXT:
                raise refuse(f"is {len(value):,} characters long, more than {MAX_TEXT:,}")
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise refuse("must not hold control characters (a newline, a tab)")
            return value
        if self.kind == "class":
            if isinstance(value, str) and value.strip() and len(value) <= 200:
                return value
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 20:
                return value
            raise refuse("must be a class index from 0 or a class name")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse("must be a number")
        if not math.isfinite(value):
            raise refuse("must be a finite number")
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise refuse("must be a whole number")
            value = int(value)
        else:
            value = float(value)
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        if below or (self.high is not None and value > self.high):
            low = "" if self.low is None else f"{'above' if self.low_open else 'from'} {self.low:g}"
            high = "" if self.high is None else f"at most {self.high:g}"
            raise refuse("must be " + " and ".join(p for p in (low, high) if p))
        return value


#: Every declared option; a name may be declared per family with its own range.
DECLARED: tuple[GeneratorOption, ...] = (
    GeneratorOption("truncation", "float", ("stylegan2",), 0.0, 2.0,
                    help="the truncation psi from 0 (the mean face) to 2, default 1"),
    GeneratorOption("truncation", "float", ("biggan",), 0.0, 1.0, low_open=True,
                    help="BigGAN's truncation in (0, 1], default 0.4"),
    GeneratorOption("mean_samples", "int", ("stylegan2",), 1, 1_000_000,
                    help="latents drawn to estimate the mean w when the checkpoint has none"),
    GeneratorOption("noise", "choice", ("stylegan2",), choices=("random", "fixed"),
                    help="random (fresh noise maps per image, PromptGen's) or fixed"),
    GeneratorOption("randomize_noise", "bool", ("stylegan2",), recorded=False,
                    help="older spelling of noise=random / noise=fixed"),
    GeneratorOption("class_name", "class", ("biggan",),
                    help="an ImageNet class (name or index) to fix"),
    GeneratorOption("steps", "int", ("diffusion", "text2image"), 1, 10_000,
                    help="DDIM steps K, e.g. 25"),
    GeneratorOption("checkpointing", "bool", ("diffusion", "text2image"), recorded=False,
                    help="recompute activations in the backward pass to save memory"),
    GeneratorOption("prompt", "text", ("text2image",),
                    help='the text the images are conditioned on, e.g. "a photo of a doctor" '
                         '(default "": unconditional)'),
    GeneratorOption("negative_prompt", "text", ("text2image",),
                    help='the text classifier-free guidance steers away from (default "")'),
    GeneratorOption("guidance", "float", ("text2image",), 1.0, 100.0,
                    help="the classifier-free guidance scale from 1 (the prompt alone, no "
                         "guidance) to 100, default 7.5"),
    GeneratorOption("height", "int", ("text2image",), 8, 4096,
                    help="image height in pixels, a multiple of 8 (default: the UNet's)"),
    GeneratorOption("width", "int", ("text2image",), 8, 4096,
                    help="image width in pixels, a multiple of 8 (default: the UNet's)"),
)
#: Option names, each with its first declaration (the one used where no family is known).
OPTIONS: dict[str, GeneratorOption] = {}
for _option in DECLARED:
    OPTIONS.setdefault(_option.name, _option)

#: Options that shape a generator: a manifest records them and ``--gen-option`` sets them.
RECORDED: tuple[str, ...] = tuple(name for name, o in OPTIONS.items() if o.recorded)


def declared(name: str, family: str | None) -> GeneratorOption:
    """Return the declaration of option ``name`` for ``family`` (None: its first one)."""
    for option in DECLARED:
        if option.name == name and (family is None or family in option.families):
            return option
    return OPTIONS[name]


#: The family of each built-in loader (``GeneratorSpec.loader``).
FAMILIES: dict[str, str] = {
    "energyql.generators.stylegan2:load_spec": "stylegan2",
    "energyql.generators.biggan:load_spec": "biggan",
    "energyql.generators.diffusion:load_spec": "diffusion",
    "energyql.generators.text2image:load_spec": "text2image",
}


def family_of(loader: str) -> str | None:
    """Return the option family of a loader: a built-in family, ``"world"`` for an embedded
    world's generator (it takes none of these options, only those its spec declares as its
    own), or None for a loader of one's own."""
    if loader in FAMILIES:
        return FAMILIES[loader]
    return "world" if loader.startswith("energyql.worlds.") else None


def family_options(family: str) -> tuple[str, ...]:
    """Return the names of the options a family takes (``device`` aside)."""
    return tuple(dict.fromkeys(o.name for o in DECLARED if family in o.families))


def check_options(family: str | None, options: Mapping[str, object], *,
                  recorded_only: bool = False, where: str = "",
                  own: tuple[GeneratorOption, ...] = ()) -> dict[str, Any]:
    """Return ``options`` checked (and converted: ``steps=25.0`` becomes 25) for a family.

    Arguments:
        family: ``"stylegan2"``, ``"biggan"``, ``"diffusion"``, ``"text2image"``, ``"world"``,
            or None for a family this table does not know (a user's loader): then only the
            options declared here are checked, by value, and the loader judges the rest.
        recorded_only: refuse options a manifest does not record (the command line's rule).
        where: the generator's name, for messages.
        own: options one generator declares for itself (an embedded world's, in its
            :class:`~energyql.generators.registry.GeneratorSpec`); they win over this table's
            declarations of the same name.

    Raises :class:`~energyql.errors.UsageError` for an unknown name, a value of the wrong kind,
    a non-finite number or one out of range.
    """
    mine = {option.name: option for option in own}
    allowed = family_options(family) if family is not None else tuple(OPTIONS)
    allowed = tuple(dict.fromkeys((*allowed, *mine)))
    if recorded_only:
        allowed = tuple(name for name in allowed
                        if (mine[name].recorded if name in mine else name in RECORDED))
    of = f" of generator '{where}'" if where else (f" of {family} generators" if family else "")
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if key == "device":
            checked[key] = value
            continue
        if key not in allowed:
            if family is None and not recorded_only and key not in OPTIONS:
                checked[key] = value  # the loader of an unknown family decides
                continue
            raise UsageError(f"unknown generator option '{key}'{of}", hint=did_you_mean(
                str(key), allowed, listing="options", limit=len(allowed)))
        checked[key] = (mine[key] if key in mine else declared(key, family)).check(value, where)
    return checked


__all__ = ["DECLARED", "FAMILIES", "MAX_TEXT", "OPTIONS", "RECORDED", "GeneratorOption",
           "check_options", "declared", "family_of", "family_options"]
