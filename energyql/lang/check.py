"""Unchecked graph + Catalog -> checked graph: every name resolved, every range and target valid.

Bare names resolve to a yes/no attribute (``smiling`` -> ``smiling == yes``) or to the one
attribute owning that value (``female`` -> ``gender == female``); attribute aliases expand
(``colour`` -> ``color``); value aliases resolve (``man`` -> ``male``). ``dist`` entries
become a full target over the joint values. ``debias(clip_bias)`` becomes a
:class:`~energyql.lang.graph.Restore` resolved from the stages before it (see
:mod:`energyql.lang.clip_bias`).
"""

from __future__ import annotations

import itertools
import math

from energyql.catalog import CATALOGS, Attribute, Catalog
from energyql.errors import (
    ArgumentError,
    CompositionError,
    EnergyQLError,
    NameResolutionError,
    UnknownGeneratorError,
)
from energyql.lang.clip_bias import resolve_clip_bias
from energyql.lang.diagnostics import error_at, suggest
from energyql.lang.graph import (
    CLIP_BIAS,
    DEBIAS,
    DIST,
    GIVEN_TARGET,
    And,
    Clip,
    Constraint,
    Control,
    DistSpec,
    Keep,
    Name,
    Not,
    Or,
    Origin,
    Param,
    Predicate,
    Program,
    Restore,
    Scale,
    Slider,
    Stage,
    Term,
)
from energyql.lang.structure import validate_program
from energyql.lang.visit import TermVisitor

#: Tolerance on a dist target's total (probabilities are written with few digits).
SUM_TOLERANCE = 1e-6
#: Leftover mass below this counts as none, so that printed targets parse back unchanged.
_NEGLIGIBLE = 1e-9


def resolve_catalog(spec: object) -> tuple[Catalog, str]:
    """Return the Catalog that ``spec`` names and the name to show in hints.

    ``spec`` is a Catalog, a catalog name, a generator name, or an object with ``.catalog``.
    """
    if isinstance(spec, Catalog):
        return spec, spec.name
    if isinstance(spec, str):
        if spec in CATALOGS:
            return CATALOGS[spec], spec
        from energyql.generators.registry import resolve

        try:
            catalog_name = resolve(spec).catalog
        except UnknownGeneratorError as error:
            error.hint = f"{error.hint}; catalogs: {', '.join(CATALOGS)}"
            raise
        if catalog_name not in CATALOGS:
            raise EnergyQLError(f"generator '{spec}' names the unknown catalog '{catalog_name}'")
        return CATALOGS[catalog_name], spec
    inner = getattr(spec, "catalog", None)
    if inner is not None and inner is not spec:
        catalog, _ = resolve_catalog(inner)
        return catalog, str(getattr(spec, "name", None) or getattr(spec, "id", None)
                            or catalog.name)
    raise UnknownGeneratorError(f"cannot find a catalog in {type(spec).__name__!r}",
                                hint="pass a generator name, a catalog name or a Catalog")


def check_program(program: Program, catalog: Catalog, where: str | None = None) -> Program:
    """Return ``program`` with every name resolved against ``catalog``."""
    checker = _Checker(catalog, where or catalog.name)
    stages: list[Stage] = []
    for index, stage in enumerate(program.stages, 1):
        stages.append(checker.stage(stage, index, tuple(stages)))
    checked = Program(tuple(stages), catalog.name, source=program.source, catalog_obj=catalog,
                      generator=where)
    return validate_program(checked)


_CLIP_BIAS_HINT = (f"write debias({CLIP_BIAS}) as a term of its own in a later stage, e.g. "
                   f'clip("a blue triangle") | then debias({CLIP_BIAS}); it brings back every '
                   "attribute the stages before it neither ask for nor constrain")


def _is_clip_bias(term: Term) -> bool:
    """True for ``debias(clip_bias)`` as written, or already resolved (checking again)."""
    if isinstance(term, Restore):
        return True
    return (isinstance(term, Constraint) and term.kind == DEBIAS.name
            and term.attrs == (CLIP_BIAS,))


class _Checker(TermVisitor[Term]):
    """Resolves the names of each term (``on_<kind>``) against one catalog."""

    def __init__(self, catalog: Catalog, where: str):
        self.catalog = catalog
        self.where = where
        values: dict[str, list[tuple[str, str]]] = {}
        for attribute in catalog.attributes:
            spellings = list(attribute.values) + [alias for alias, _ in attribute.value_aliases]
            for spelling in spellings:
                value = attribute.resolve_value(spelling)
                if value is not None:
                    values.setdefault(spelling, []).append((attribute.name, value))
        self.values = values  # spelling -> [(attribute, canonical value)]

    # -- stages
    def stage(self, stage: Stage, index: int, earlier: tuple[Stage, ...] = ()) -> Stage:
        checked = [None if _is_clip_bias(t) else self.term(t) for t in stage.terms]
        others = tuple(t for t in checked if t is not None)
        terms = tuple(t if t is not None else resolve_clip_bias(
            self.catalog, earlier, others, index, stage.terms[i].origin, self.where)
            for i, t in enumerate(checked))
        constrained: dict[str, Constraint] = {}
        for term in Stage(terms).constraints:
            for attr in term.attrs:
                if attr in constrained:
                    raise error_at(CompositionError, f"attribute '{attr}' is constrained twice "
                                   f"in stage {index}", term.origin,
                                   "constrain each attribute once per stage; for a joint target "
                                   "use a product, e.g. uniform(race x age)")
                constrained[attr] = term
        return Stage(terms)

    def term(self, term: Term) -> Term:
        return self.visit(term)

    def fallback(self, term: Term, *args: object, **kwargs: object) -> Term:
        raise error_at(CompositionError, f"cannot check a {type(term).__name__} term",
                       getattr(term, "origin", None))

    def on_clip(self, term: Clip) -> Term:
        return term

    def on_restore(self, term: Restore) -> Term:
        raise error_at(CompositionError, f"debias({term.name}) must stand at the top of a stage",
                       term.origin, _CLIP_BIAS_HINT)

    def on_not(self, term: Not) -> Term:
        return Not(self.term(term.term), origin=term.origin)

    def on_and(self, term: And) -> Term:
        return And(tuple(self.term(t) for t in term.terms), origin=term.origin)

    def on_or(self, term: Or) -> Term:
        return Or(tuple(self.term(t) for t in term.terms), origin=term.origin)

    def on_scale(self, term: Scale) -> Term:
        if term.slider is not None:
            self.slider_name(term.slider)
        return Scale(term.weight, self.term(term.term), term.slider, origin=term.origin)

    def slider_name(self, slider: Slider) -> None:
        """A slider is named apart from the catalog's attributes and values (``--set NAME=``
        must never read as an attribute)."""
        clash = ("an attribute" if self.catalog.attribute(slider.name) is not None
                 or self.catalog.alias(slider.name) is not None
                 else "a value" if slider.name in self.values else None)
        if clash is not None:
            raise error_at(NameResolutionError, f"the slider '{slider.name}' has the name of "
                           f"{clash} of {self.where}", slider.origin,
                           f"name the slider apart, e.g. {slider.name}_share")

    # -- names
    def attribute_hint(self, name: str) -> str:
        pool = list(self.catalog.attribute_names) + [a for a, _ in self.catalog.aliases]
        return suggest(name, pool, f"attributes of {self.where}")

    def attributes(self, names: tuple[str, ...],
                   parts: tuple[Origin | None, ...]) -> tuple[Attribute, ...]:
        """Resolve attribute names and aliases (which expand) to catalog attributes."""
        out: list[Attribute] = []
        for index, name in enumerate(names):
            origin = parts[index] if index < len(parts) else None
            expansion = (name,) if self.catalog.attribute(name) else self.catalog.alias(name)
            if expansion is None:
                raise error_at(NameResolutionError, f"unknown attribute '{name}'", origin,
                               self.attribute_hint(name))
            for attr in expansion:
                attribute = self.catalog.attribute(attr)
                if attribute is None:  # an alias naming a missing attribute: a catalog bug
                    raise error_at(NameResolutionError, f"alias '{name}' names the unknown "
                                   f"attribute '{attr}'", origin)
                if attribute in out:
                    raise error_at(ArgumentError, f"attribute '{attr}' appears twice", origin,
                                   "name each attribute once in a product")
                out.append(attribute)
        return tuple(out)

    def value(self, attribute: Attribute, name: str, origin: Origin | None) -> str:
        value = attribute.resolve_value(name)
        if value is None:
            spellings = list(attribute.values) + [a for a, _ in attribute.value_aliases]
            close = suggest(name, spellings)
            raise error_at(NameResolutionError, f"unknown value '{name}' of '{attribute.name}'",
                           origin, f"{close} values of {attribute.name}: "
                           f"{', '.join(attribute.values)}".strip())
        return value

    def on_predicate(self, term: Predicate) -> Term:
        attr_at, value_at = (term.parts + (None, None))[:2]
        attributes = self.attributes((term.attr,), (attr_at or term.origin,))
        if len(attributes) != 1:
            raise error_at(ArgumentError, f"'{term.attr}' names several attributes "
                           f"({', '.join(a.name for a in attributes)}); compare one at a time",
                           attr_at or term.origin)
        attribute = attributes[0]
        value = self.value(attribute, term.value, value_at or term.origin)
        return Predicate(attribute.name, value, origin=term.origin, parts=term.parts)

    def on_name(self, term: Name) -> Term:
        name, origin = term.name, term.origin
        if name == CLIP_BIAS and self.catalog.attribute(name) is None:
            raise error_at(ArgumentError, f"'{CLIP_BIAS}' is not a term", origin,
                           _CLIP_BIAS_HINT)
        attribute = self.catalog.attribute(name)
        alias = self.catalog.alias(name)
        if attribute is None and alias is not None and len(alias) == 1:
            attribute = self.catalog.attribute(alias[0])
        if attribute is not None:
            if attribute.binary:
                return Predicate(attribute.name, "yes", origin=origin, parts=(origin, None))
            raise error_at(ArgumentError, f"'{name}' is not a yes/no attribute", origin,
                           f"compare it with a value, e.g. {attribute.name} == "
                           f"{attribute.values[0]}, or constrain it with uniform({name})")
        if alias is not None:
            raise error_at(CompositionError, f"'{name}' names the attribute product "
                           f"{' x '.join(alias)}, not a term", origin,
                           f"use it in uniform({name}), debias({name}) or dist({name}, ...)")
        owners = self.values.get(name, [])
        if len(owners) == 1:
            attr, value = owners[0]
            return Predicate(attr, value, origin=origin, parts=(None, origin))
        if owners:
            choices = " or ".join(f"{a} == {name}" for a, _ in owners[:4])
            raise error_at(NameResolutionError, f"'{name}' is a value of several attributes",
                           origin, f"say which: {choices}")
        pool = ([a.name for a in self.catalog.attributes if a.binary] + list(self.values)
                + [a.name for a in self.catalog.attributes] + [a for a, _ in self.catalog.aliases])
        binary = [a.name for a in self.catalog.attributes if a.binary]
        listing = (f"yes/no attributes of {self.where}" if binary else
                   f"attributes of {self.where}")
        hint = suggest(name, pool)
        shown = binary or list(self.catalog.attribute_names)
        tail = f"{listing}: {', '.join(shown) if shown else 'none'}"
        if not self.catalog.attributes:
            tail += ' (this generator only knows clip("..."))'
        raise error_at(NameResolutionError, f"unknown name '{name}'", origin,
                       f"{hint} {tail}".strip())

    # -- constraints
    def on_constraint(self, term: Constraint) -> Term:
        if CLIP_BIAS in term.attrs and self.catalog.attribute(CLIP_BIAS) is None:
            raise error_at(ArgumentError, f"'{CLIP_BIAS}' stands alone in debias({CLIP_BIAS}), "
                           f"not in {term.kind}(...)", term.origin, _CLIP_BIAS_HINT)
        attributes = self.attributes(term.attrs, term.parts or (term.origin,) * len(term.attrs))
        attrs = tuple(a.name for a in attributes)
        values = tuple(a.values for a in attributes)
        size = math.prod(len(v) for v in values)
        if term.rule.target == GIVEN_TARGET:
            target = term.target
            if len(target) != size or abs(sum(target) - 1) > SUM_TOLERANCE \
                    or any(not 0 <= p <= 1 for p in target):
                raise error_at(ArgumentError, f"dist target over {' x '.join(attrs)} needs "
                               f"{size} probabilities summing to 1", term.origin)
        else:
            target = (1.0 / size,) * size
        for _, slider in term.sliders:
            self.slider_name(slider)
        return Constraint(term.kind, attrs, target, origin=term.origin, values=values,
                          parts=term.parts, sliders=term.sliders, free=term.free)

    def on_dist_spec(self, term: DistSpec) -> Term:
        attr_parts, entry_parts = term.parts if term.parts else ((), ())
        attributes = self.attributes(term.attrs, attr_parts or (term.origin,) * len(term.attrs))
        attrs = tuple(a.name for a in attributes)
        values = tuple(a.values for a in attributes)
        cells = list(itertools.product(*values))
        given: dict[tuple[str, ...], float] = {}
        sliders: dict[tuple[str, ...], Slider] = {}
        for index, (key, amount) in enumerate(term.entries):
            origins = entry_parts[index] if index < len(entry_parts) else ()
            where = origins[0] if origins else term.origin
            if len(key) != len(attributes):
                raise error_at(ArgumentError, f"entry '{' x '.join(key)}' names {len(key)} "
                               f"value(s), but dist() is over {' x '.join(attrs)}", where,
                               f"name one value per attribute, e.g. "
                               f"{' x '.join(a.values[0] for a in attributes)}=0.5")
            cell = tuple(self.value(a, v, origins[i] if i < len(origins) else where)
                         for i, (a, v) in enumerate(zip(attributes, key)))
            if cell in given:
                raise error_at(ArgumentError, f"value '{' x '.join(cell)}' is given twice",
                               where)
            if isinstance(amount, Slider):
                self.slider_name(amount)
                sliders[cell] = amount
            probability = amount.middle if isinstance(amount, Slider) else amount
            if not 0.0 <= probability <= 1.0:
                raise error_at(ArgumentError, f"probability {probability:g} is not in [0, 1]",
                               where)
            given[cell] = probability
        # With sliders the listed entries must leave room for every setting: the highest.
        total = sum(sliders[c].high if c in sliders else p for c, p in given.items())
        missing = len(cells) - len(given)
        if sliders and not missing:
            raise error_at(ArgumentError, "a dist() with a slider must leave a value unlisted",
                           term.origin, "unlisted values share what the listed ones leave of 1, "
                           "e.g. dist(size, small = s in 0.2..0.8) gives large the rest")
        if total > 1 + SUM_TOLERANCE:
            at_most = " at their highest" if sliders else ""
            raise error_at(ArgumentError, f"dist() probabilities sum to {total:g}{at_most}, "
                           "more than 1", term.origin, "unlisted values share what is left of "
                           "1; listed ones must not exceed it")
        if not missing and abs(total - 1) > SUM_TOLERANCE:
            raise error_at(ArgumentError, f"dist() probabilities sum to {total:g}, not 1",
                           term.origin, "make them sum to 1 (they are not rescaled)")
        # Rounded to 12 digits so that the printed target reads cleanly and parses back equal.
        share = 0.0
        if missing and 1 - total > _NEGLIGIBLE:
            share = float(f"{(1 - total) / missing:.12g}")
        if sliders:  # the target at the sliders' middles; target_at gives every setting
            share = (1 - sum(given.values())) / missing
        target = tuple(given.get(cell, share) for cell in cells)
        return Constraint(DIST.name, attrs, target, origin=term.origin, values=values,
                          parts=attr_parts,
                          sliders=tuple(sorted((cells.index(c), s) for c, s in sliders.items())),
                          free=tuple(i for i, c in enumerate(cells) if c not in given)
                          if sliders else ())

    # -- conditional control
    def on_control(self, term: Control) -> Term:
        control = self.catalog.control(term.name)
        if control is None:
            from energyql.lang.bind import BUILTINS

            names = [c.name for c in self.catalog.controls]
            hint = suggest(term.name, names + list(BUILTINS),
                           f"controls of {self.where}")
            raise error_at(NameResolutionError, f"unknown control '{term.name}'", term.origin,
                           hint)
        params = []
        for param in term.params:
            declared = control.parameter(param.name)
            if declared is None:
                raise error_at(NameResolutionError,
                               f"unknown parameter '{param.name}' of {term.name}()",
                               param.origin or term.origin,
                               suggest(param.name, [p.name for p in control.parameters],
                                       f"parameters of {term.name}"))
            if param.low < declared.low or param.high > declared.high:
                unit = f" {declared.unit}" if declared.unit else ""
                raise error_at(ArgumentError, f"range {param.low:g}..{param.high:g} of "
                               f"'{param.name}' leaves the control's range", param.origin or
                               term.origin, f"{term.name}() reads {param.name} in "
                               f"{declared.low:g}..{declared.high:g}{unit}")
            params.append(Param(param.name, param.low, param.high, origin=param.origin))
        return Control(control.name, tuple(params), origin=term.origin)

    def on_keep(self, term: Keep) -> Term:
        if self.catalog.keepable(term.what) is None:
            raise error_at(NameResolutionError, f"cannot keep '{term.what}'", term.origin,
                           suggest(term.what, [k for k, _ in self.catalog.keepables],
                                   f"keep() of {self.where} takes"))
        return term
