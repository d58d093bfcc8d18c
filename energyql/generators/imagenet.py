"""The ImageNet world's ``class`` attribute: 1000 values, their labels and aliases (no torch).

Values are the class names in snake case (``golden_retriever``); the few names ImageNet uses
twice (``crane`` the bird and the machine, ``maillot``) get their label index appended to the
second (``crane_517``). Every class is also reachable as ``imagenet_<index>``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from energyql.generators.imagenet_classes import NAMES


def identifier(name: str) -> str:
    """Return the expression spelling of a class name: lower snake case."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@lru_cache(maxsize=1)
def class_values() -> tuple[str, ...]:
    """Return the 1000 value names in label order, unique."""
    seen: set[str] = set()
    values = []
    for index, name in enumerate(NAMES):
        value = identifier(name)
        if value in seen:
            value = f"{value}_{index}"
        seen.add(value)
        values.append(value)
    return tuple(values)


def class_attribute(model: str = "clip-zero-shot"):
    """Return the catalog Attribute ``class`` over the ImageNet classes."""
    from energyql.catalog import Attribute

    values = class_values()
    return Attribute(
        "class", values, model, labels=NAMES,
        value_aliases=tuple((f"imagenet_{i}", v) for i, v in enumerate(values)),
        description="the ImageNet-1k class of the image (BigGAN's label)")
