"""The public face of the language: :func:`compile` and the combinators.

    >>> import energyql as eq
    >>> prog = eq.compile('clip("a smiling man") & uniform(race x age) | then debias(clip_bias)',
    ...                   gen="stylegan2-ffhq")
    >>> str(prog)
    'clip("a smiling man") & uniform(race x age) | then debias(gender)'
    >>> prog == (eq.clip("a smiling man") & eq.uniform("race", "age")).then(
    ...     eq.debias("gender")).checked("faces")
    True
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from numbers import Real

from energyql.errors import ArgumentError, ParseError, Span
from energyql.lang.bind import KEYWORDS, bind, env_bindings
from energyql.lang.check import check_program, resolve_catalog
from energyql.lang.graph import (
    DEBIAS,
    UNIFORM,
    Clip,
    Constraint,
    Control,
    DistSpec,
    Keep,
    Name,
    Param,
    Predicate,
    Program,
    Slider,
    Stage,
    Term,
    scaled,
)
from energyql.lang.parser import parse
from energyql.lang.structure import validate_program

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def compile(src: str, *, gen: object = None, env: Mapping[str, object] | None = None) -> Program:
    """Return the program that ``src`` spells, checked against ``gen``'s catalog.

    Arguments:
        src: the expression, e.g. ``'clip("a smiling man") & uniform(race x age)'``.
        gen: a generator name (``"stylegan2-ffhq"``), a catalog name (``"faces"``), a
            :class:`~energyql.catalog.Catalog` or a generator object with ``.catalog``. None
            leaves catalog names unchecked (``catalog=None``); check later with
            ``program.checked(...)``.
        env: bindings visible to the expression after its own ``let``\\ s: numbers, tuples of
            attribute names, expression text or programs.

    Raises only :class:`~energyql.errors.EnergyQLError` subclasses. Results are cached by
    ``(src, gen, env)``.
    """
    if not isinstance(src, str):
        raise ArgumentError(f"expected the expression as text, got {type(src).__name__}")
    try:
        key = (src, gen, _freeze(env))
        hash(key)
    except TypeError:
        return _compile(src, gen, env)
    return _compile_cached(*key)


def _freeze(env: Mapping[str, object] | None) -> tuple[tuple[str, object], ...] | None:
    if env is None:
        return None
    if not isinstance(env, Mapping):
        raise ArgumentError(f"env must be a mapping of names to values, got {type(env).__name__}")
    return tuple(sorted(((k, tuple(v) if isinstance(v, list) else v) for k, v in env.items()),
                        key=lambda item: str(item[0])))


@lru_cache(maxsize=512)
def _compile_cached(src: str, gen: object,
                    env: tuple[tuple[str, object], ...] | None) -> Program:
    return _compile(src, gen, dict(env) if env is not None else None)


def _compile(src: str, gen: object, env: Mapping[str, object] | None) -> Program:
    try:
        catalog = resolve_catalog(gen) if gen is not None else None
        program = bind(parse(src), src, env_bindings(env))
        return check_program(program, *catalog) if catalog else program
    except RecursionError:  # a safety net: the parser refuses deep nesting before this
        raise ParseError("expression nested too deeply", source=src,
                         span=Span(0, len(src))) from None


# --- combinators ----------------------------------------------------------------------------------


def _one(term: Term) -> Program:
    return validate_program(Program((Stage((term,)),)), complete=False)


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _IDENT.match(value) or value in KEYWORDS:
        raise ArgumentError(f"{what} {value!r} is not a name",
                            hint="names are letters, digits and '_', and not a keyword")
    return value


def _names(attrs: Sequence[object], func: str) -> tuple[str, ...]:
    if len(attrs) == 1 and isinstance(attrs[0], (tuple, list)):
        attrs = tuple(attrs[0])
    if not attrs:
        raise ArgumentError(f"{func}() needs attribute names", hint=f'e.g. {func}("race", "age")')
    return tuple(_name(a, "attribute") for a in attrs)


def clip(text: str, *, model: str | None = None, weight: float | None = None,
         augment: int | None = None) -> Program:
    """Create ``clip("text")``: an energy pulling images towards a CLIP prompt.

    Example: ``eq.clip("a smiling man", weight=2)`` equals ``2 * eq.clip("a smiling man")``.
    """
    if not isinstance(text, str) or not text.strip():
        raise ArgumentError("clip() needs a non-empty prompt")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ArgumentError("model= takes a model name such as 'ViT-B-32:openai'")
    if augment is not None and (isinstance(augment, bool) or not isinstance(augment, int)
                                or not 1 <= augment <= 1024):
        raise ArgumentError("augment= takes a whole number from 1 to 1024")
    term: Term = Clip(text, model, augment)
    if isinstance(weight, Slider):
        return weight * _one(term)
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, Real):
            raise ArgumentError("weight= takes a number")
        term = scaled(float(weight), term)
    return _one(term)


def attr(name: str, value: str | None = None) -> Program:
    """Create a predicate: ``attr("smiling")`` (a bare name) or ``attr("gender", "female")``."""
    if value is None:
        return _one(Name(_name(name, "name")))
    return _one(Predicate(_name(name, "attribute"), _name(value, "value")))


def uniform(*attrs: str) -> Program:
    """Create ``uniform(a x b)``: the joint of the attributes made uniform."""
    return _one(Constraint(UNIFORM.name, _names(attrs, UNIFORM.name)))


def debias(*attrs: str) -> Program:
    """Create ``debias(a x b)``: uniform over the joint, relative to this stage's distribution."""
    return _one(Constraint(DEBIAS.name, _names(attrs, DEBIAS.name)))


def dist(attrs: str | Sequence[str],
         probabilities: Mapping[str | tuple[str, ...], float] | None = None, /,
         **named: float) -> Program:
    """Create ``dist(attrs, value=p, ...)``: an explicit target distribution.

    Example: ``eq.dist("size", small=0.3, large=0.7)`` or, over a joint,
    ``eq.dist(("gender", "smiling"), {("female", "yes"): 0.4, ("male", "yes"): 0.4})``.
    Unlisted values share what is left of 1 equally.
    """
    names = _names((attrs,) if isinstance(attrs, str) else tuple(attrs), "dist")
    items = list((probabilities or {}).items()) + list(named.items())
    if not items:
        raise ArgumentError("dist() needs value=probability entries",
                            hint='e.g. eq.dist("size", small=0.3, large=0.7)')
    entries: list[tuple[tuple[str, ...], float | Slider]] = []
    for given, probability in items:
        key = (given,) if isinstance(given, str) else tuple(given)
        if isinstance(probability, Slider):
            if not 0 <= probability.low < probability.high <= 1:
                raise ArgumentError(f"the slider {probability.name!r} sets a probability, so "
                                    "its range must lie in 0..1")
            entries.append((tuple(_name(k, "value") for k in key), probability))
            continue
        if isinstance(probability, bool) or not isinstance(probability, Real) \
                or not 0 <= float(probability) <= 1:
            raise ArgumentError(f"the probability of {' x '.join(map(str, key))!r} must be a "
                                "number from 0 to 1")
        entries.append((tuple(_name(k, "value") for k in key), float(probability)))
    return _one(DistSpec(names, tuple(entries)))


def slider(name: str, low: float, high: float) -> Slider:
    """Create ``name in low..high``: a number of an expression set at sample time.

    It composes like a number: ``eq.slider("w", 0, 3) * eq.attr("smiling")``,
    ``eq.dist("size", small=eq.slider("s", 0.2, 0.8))``, or ``env={"s": eq.slider(...)}``.
    """
    bounds: list[float] = []
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, Real) or not math.isfinite(bound):
            raise ArgumentError(f"the range of slider {name!r} takes two finite numbers")
        bounds.append(float(bound))
    if not bounds[0] < bounds[1]:
        raise ArgumentError(f"the slider {name!r} has the empty range {low:g}..{high:g}",
                            hint="give the lower bound first")
    return Slider(_name(name, "slider"), bounds[0], bounds[1])


def control(name: str, **ranges: tuple[float, float]) -> Program:
    """Create a conditional control, e.g. ``control("pose", yaw=(-30, 30))``."""
    params = []
    for param, bounds in ranges.items():
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise ArgumentError(f"the range of '{param}' must be a (low, high) pair") from None
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise ArgumentError(f"the range {low:g}..{high:g} of '{param}' is empty or infinite")
        params.append(Param(_name(param, "parameter"), low, high))
    if not params:
        raise ArgumentError(f"{name}() needs at least one parameter range",
                            hint=f"e.g. eq.{name}(yaw=(-30, 30))")
    return _one(Control(_name(name, "control"), tuple(params)))


def pose(**ranges: tuple[float, float]) -> Program:
    """Create ``pose(yaw in -30..30)`` as ``pose(yaw=(-30, 30))``."""
    return control("pose", **ranges)


def keep(what: str = "identity") -> Program:
    """Create ``keep(identity)``: keep ``what`` fixed across a conditional control's sweep."""
    return _one(Keep(_name(what, "keep() name")))


__all__ = ["Program", "Slider", "attr", "clip", "compile", "control", "debias", "dist", "keep",
           "pose", "slider", "uniform"]
