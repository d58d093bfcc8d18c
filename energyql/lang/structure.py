"""Composition rules that hold with or without a catalog.

- constraints, controls and ``keep`` are top-level conjuncts of a stage (never under
  ``not``, ``or`` or a weight);
- ``not`` applies only to probability-valued terms (predicates and their not/and/or);
- weights are finite and positive; a stage has at least one term; a control appears at most
  once per stage and ``keep(...)`` needs one.
"""

from __future__ import annotations

import math

from energyql.errors import ArgumentError, CompositionError
from energyql.lang.diagnostics import error_at
from energyql.lang.graph import (
    STAGE_LEVEL,
    And,
    Constraint,
    Control,
    DistSpec,
    Keep,
    Not,
    Or,
    Program,
    Scale,
    Slider,
    Stage,
    Term,
    sliders_of,
    to_source,
)

_PLACEMENT_HINT = ("constraints, controls and keep(...) combine with '&' at the top of a stage, "
                   'e.g. clip("a face") & uniform(race)')


def describe(term: Term, limit: int = 40) -> str:
    """Return a short quoted rendering of ``term`` for messages."""
    try:
        text = to_source(term)
    except CompositionError:
        text = type(term).__name__
    return f"'{text[:limit - 3]}...'" if len(text) > limit else f"'{text}'"


def validate_program(program: Program, *, complete: bool = True) -> Program:
    """Raise a CompositionError or ArgumentError where ``program`` breaks a rule; else return it.

    ``complete=False`` skips the rules that only a whole stage can meet (``keep(...)`` needs a
    control), so that combinators can build fragments such as ``eq.keep("identity")``.
    """
    for index, stage in enumerate(program.stages, 1):
        validate_stage(stage, index, complete=complete)
    validate_sliders(program)
    return program


#: Most sliders in one stage (each is an input of the stage's flow).
MAX_SLIDERS = 16
#: Most sliders in a stage with constraints: λ is fitted on a grid of settings, whose size
#: grows as points ** sliders (3 ** 5 = 243 fits).
MAX_GRID_SLIDERS = 5


def validate_sliders(program: Program) -> None:
    """Every use of a slider name has one range; the sliders a stage takes (its own and
    every earlier stage's) are few enough to train and named apart from the stage's control
    parameters."""
    for index, stage in enumerate(program.stages, 1):
        sliders = program.stage_sliders(index - 1)
        has_constraints = any(isinstance(t, (Constraint, DistSpec)) for t in stage.terms)
        most = MAX_GRID_SLIDERS if has_constraints else MAX_SLIDERS
        if len(sliders) > most:
            why = " with constraints (λ is fitted on a grid of settings)" \
                if has_constraints else ""
            earlier = " (with those of the stages before it)" if len(stage.sliders) < \
                len(sliders) else ""
            raise error_at(ArgumentError, f"stage {index} takes {len(sliders)} sliders"
                           f"{earlier}; a stage{why} takes at most {most}",
                           sliders[most].origin, "fix some of the numbers, or split the stage")
    ranges: dict[str, Slider] = {}
    for index, stage in enumerate(program.stages, 1):
        params = {p.name for control in stage.controls for p in control.params}
        for term in stage.terms:
            for node in term.walk():
                if isinstance(node, Scale) and node.slider is not None and node is not term:
                    raise error_at(CompositionError, f"the slider weight '{node.slider}' stands "
                                   "inside another term", node.origin, "give a slider weight to "
                                   "a term at the top of the stage, e.g. (w in 0..3) * smiling "
                                   "& clip(\"a face\")")
            for slider in sliders_of(term):
                seen = ranges.setdefault(slider.name, slider)
                if (seen.low, seen.high) != (slider.low, slider.high):
                    raise error_at(ArgumentError, f"the slider '{slider.name}' is given two "
                                   f"ranges ({seen.low:g}..{seen.high:g} and "
                                   f"{slider.low:g}..{slider.high:g})", slider.origin,
                                   "a slider name used twice is one value: give it one range, "
                                   "or name the second slider apart")
        for slider in program.stage_sliders(index - 1):
            if slider.name in params:
                where = "" if slider in stage.sliders else \
                    f" (stage {index} takes it from an earlier stage)"
                raise error_at(ArgumentError, f"'{slider.name}' names both a slider and a "
                               f"control parameter{where}", slider.origin,
                               "give the slider a name of its own")


def validate_stage(stage: Stage, index: int = 1, *, complete: bool = True) -> None:
    if not stage.terms:
        raise CompositionError(f"stage {index} has no terms")
    controls: dict[str, Control] = {}
    for term in stage.terms:
        if isinstance(term, Control):
            if term.name in controls:
                raise error_at(CompositionError,
                               f"control '{term.name}' appears twice in stage {index}",
                               term.origin, f"give all its ranges in one call, e.g. "
                               f"{term.name}(yaw in -30..30, pitch in -10..10)")
            controls[term.name] = term
        elif not isinstance(term, STAGE_LEVEL):
            _validate_pointwise(term)
    keeps = [t for t in stage.terms if isinstance(t, Keep)]
    if complete and keeps and not controls:
        raise error_at(CompositionError,
                       f"keep({keeps[0].what}) needs a conditional control in the same stage",
                       keeps[0].origin, "pair it with a control, e.g. "
                       "pose(yaw in -30..30) & keep(identity)")


def _context(term: Term | None) -> str:
    if isinstance(term, Not):
        return "'not'"
    if isinstance(term, Or):
        return "'or'"
    if isinstance(term, Scale):
        return "a weight"
    return "'&' inside another operator"


def _validate_pointwise(root: Term) -> None:
    stack: list[tuple[Term, Term | None]] = [(root, None)]
    while stack:
        term, parent = stack.pop()
        if isinstance(term, STAGE_LEVEL):
            what = "constraint" if isinstance(term, (Constraint, DistSpec)) else (
                "control" if isinstance(term, Control) else "keep(...)")
            raise error_at(CompositionError,
                           f"the {what} {describe(term)} cannot stand under {_context(parent)}",
                           term.origin, _PLACEMENT_HINT)
        if isinstance(term, Not) and not isinstance(term.term, STAGE_LEVEL) \
                and not term.term.is_probability:
            raise error_at(CompositionError,
                           f"'not' applies to predicates, not to {describe(term.term)}",
                           term.origin, "negate predicates such as smiling or gender == male; "
                           "an energy such as a clip prompt or a weighted term has no 'not'")
        if isinstance(term, Scale) and not (math.isfinite(term.weight) and term.weight > 0):
            raise error_at(ArgumentError,
                           f"weights must be positive numbers, got {term.weight:g}",
                           term.origin, "to push away from a predicate use 'not', e.g. "
                           "not smiling")
        if isinstance(term, (And, Or, Not, Scale)):
            stack.extend((child, term) for child in term.children)
