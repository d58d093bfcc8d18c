"""What ``debias(clip_bias)`` means in a program: a :class:`~energyql.lang.graph.Restore`.

In stage k, ``clip_bias`` names the catalog attributes that neither the earlier stages nor the
other terms of stage k constrain (``uniform``/``debias``/``dist``) or ask for (in predicates,
or in a CLIP prompt: words matched to catalog values, value aliases and yes/no attribute
names, so "a smiling man" asks for ``smiling == yes`` and ``gender == male``). Each is brought
back to the generator's own distribution *given what was asked*, p0(a | asked), and the
earlier stages' constraints are re-asserted so that they keep holding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from energyql.catalog import Catalog
from energyql.errors import CompositionError
from energyql.lang.diagnostics import error_at
from energyql.lang.graph import (
    CLIP_BIAS,
    RESTORE,
    Clip,
    Constraint,
    Origin,
    Predicate,
    Resolution,
    Restore,
    Scale,
    Stage,
    Term,
    quote,
    to_source,
)

#: Words that turn the next yes/no attribute of a prompt into "no" ("a man without glasses").
NEGATIONS = frozenset({"no", "not", "without", "non"})
_WORD = re.compile(r"[a-z0-9]+")


def prompt_matches(text: str, catalog: Catalog) -> tuple[tuple[str, str, str], ...]:
    """Return ``(word, attribute, value)`` for each word of a prompt that asks for a value.

    Words match catalog values, value aliases and yes/no attribute names (two words also match
    a value spelt with ``_``, e.g. "blond hair"; a trailing plural "s" is dropped when the word
    itself does not match). A spelling that several attributes share (``yes``) matches nothing.
    """
    spellings: dict[str, set[tuple[str, str]]] = {}
    for attribute in catalog.attributes:
        for spelling in list(attribute.values) + [alias for alias, _ in attribute.value_aliases]:
            value = attribute.resolve_value(spelling)
            if value is not None:
                spellings.setdefault(spelling.lower(), set()).add((attribute.name, value))
        if attribute.binary:
            spellings.setdefault(attribute.name.lower(), set()).add((attribute.name, "yes"))

    def lookup(word: str) -> tuple[str, str] | None:
        for spelling in (word, word[:-1] if word.endswith("s") else None):
            owners = spellings.get(spelling) if spelling else None
            if owners:
                return next(iter(owners)) if len(owners) == 1 else None
        return None

    words = _WORD.findall(text.lower())
    found: list[tuple[str, str, str]] = []
    i = 0
    while i < len(words):
        pair = f"{words[i]}_{words[i + 1]}" if i + 1 < len(words) else ""
        hit, used = (lookup(pair), 2) if pair and lookup(pair) else (lookup(words[i]), 1)
        if hit is not None:
            attr, value = hit
            owner = catalog.attribute(attr)
            if owner is not None and owner.binary and i and words[i - 1] in NEGATIONS:
                value = "no"
            found.append((" ".join(words[i:i + used]), attr, value))
        i += used
    return tuple(found)


class _Sources:
    """What the terms before ``debias(clip_bias)`` ask for and constrain, with the reasons."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.asked: dict[str, str] = {}
        self.constrained: dict[str, str] = {}
        self.given: list[Term] = []
        self.matched: list[tuple[str, str, str, str]] = []

    def add(self, term: Term, where: str) -> None:
        if isinstance(term, Restore):
            for constraint in term.constraints:
                for attr in constraint.attrs:
                    self.constrained.setdefault(attr, f"debias({term.name}) {where}")
            return
        if isinstance(term, Constraint):
            for attr in term.attrs:
                self.constrained.setdefault(attr, f"{to_source(term)} {where}")
            return
        probability = term.term if isinstance(term, Scale) else term
        if probability.is_probability and probability not in self.given:
            self.given.append(probability)
        for node in term.walk():
            if isinstance(node, Predicate):
                self.asked.setdefault(node.attr, f"{to_source(term)} {where}")
            elif isinstance(node, Clip):
                self.add_prompt(node.text, where)

    def add_prompt(self, text: str, where: str) -> None:
        for word, attr, value in prompt_matches(text, self.catalog):
            self.matched.append((text, word, attr, value))
            predicate = Predicate(attr, value)
            if predicate not in self.given:
                self.given.append(predicate)
            self.asked.setdefault(attr, f"clip({quote(text)}) {where}")


def _reasserted(earlier: Sequence[Stage], here: set[str]) -> tuple[tuple[Constraint, ...],
                                                                   tuple[tuple[str, str], ...]]:
    """The earlier stages' constraints to hold again (the latest per attribute wins)."""
    kept: list[Constraint] = []
    dropped: list[tuple[str, str]] = []
    taken = set(here)
    for k in range(len(earlier), 0, -1):
        for constraint in reversed(earlier[k - 1].constraints):
            text = f"{to_source(constraint)} (stage {k})"
            clash = sorted(taken & set(constraint.attrs))
            if clash:
                dropped.append((text, f"{', '.join(clash)} is constrained again later"))
                continue
            taken.update(constraint.attrs)
            kept.append(constraint)
    return tuple(reversed(kept)), tuple(dropped)


def resolve_clip_bias(catalog: Catalog, earlier: Sequence[Stage], others: Sequence[Term],
                      index: int, origin: Origin | None = None, where: str = "") -> Restore:
    """Return what ``debias(clip_bias)`` in stage ``index`` means.

    Arguments:
        catalog: the world's catalog.
        earlier: the checked stages before this one.
        others: the other checked terms of this stage.
        index: the stage's number, from 1.
        origin: where ``debias(clip_bias)`` was written (for errors).
        where: the generator or catalog name shown in hints.
    """
    sources = _Sources(catalog)
    for k, stage in enumerate(earlier, 1):
        for term in stage.terms:
            sources.add(term, f"in stage {k}")
    for term in others:
        sources.add(term, f"in stage {index}")
    left_out = set(sources.asked) | set(sources.constrained)
    restored = [a for a in catalog.attributes if a.name not in left_out]
    if not restored:
        raise error_at(
            CompositionError, f"debias({CLIP_BIAS}) in stage {index} has nothing to restore: "
            f"every attribute of {where or catalog.name} is asked for or constrained", origin,
            "drop it, or name the attributes to debias yourself, e.g. debias("
            f"{catalog.attribute_names[0] if catalog.attribute_names else 'ATTRIBUTE'})"
            if catalog.attributes else f"{where or catalog.name} has no attributes to debias")
    given = tuple(sources.given)
    restores = tuple(Constraint(RESTORE, (a.name,), (), values=(a.values,), given=given,
                                origin=origin) for a in restored)
    here = {a for t in others for c in (t.constraints if isinstance(t, Restore) else (t,))
            if isinstance(c, Constraint) for a in c.attrs}
    reasserts, dropped = _reasserted(earlier, here)
    resolution = Resolution(matched=tuple(sources.matched),
                            asked=tuple(sources.asked.items()),
                            constrained=tuple(sources.constrained.items()), dropped=dropped)
    return Restore(CLIP_BIAS, restores, reasserts, origin=origin, resolution=resolution)
