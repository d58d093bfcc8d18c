"""Composition of programs in Python: ``&``, ``.then`` / ``|``, ``w * p``, ``~p``, ``.or_``.

Each operation builds the same graph the parser builds for the equivalent text, and applies
the same composition rules. Mixing a checked and an unchecked program checks the unchecked
one against the other's catalog.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from energyql.errors import ArgumentError, CompositionError
from energyql.lang.graph import And, Not, Or, Program, Restore, Scale, Slider, Stage, Term, scaled
from energyql.lang.structure import validate_program

if TYPE_CHECKING:
    from energyql.catalog import Catalog


def as_program(value: Program | Term) -> Program:
    """Return ``value`` as a program (a term becomes a one-stage program)."""
    if isinstance(value, Program):
        return value
    if isinstance(value, Term):
        return Program((Stage((value,)),))
    raise TypeError(f"expected an energyql Program or term, got {type(value).__name__}")


def _unify(programs: list[Program]) -> list[Program]:
    checked = [p for p in programs if p.catalog is not None]
    if not checked:
        return programs
    names = {p.catalog for p in checked if p.catalog is not None}
    if len(names) > 1:
        raise CompositionError(f"cannot combine programs checked against different catalogs "
                               f"({', '.join(sorted(names))})")
    anchor = checked[0]
    catalog: Catalog | str = anchor.catalog_obj or str(anchor.catalog)
    return [p if p.catalog is not None else p.checked(catalog) for p in programs]


def _build(stages: tuple[Stage, ...], parts: list[Program]) -> Program:
    from energyql.catalog import CATALOGS
    from energyql.lang.check import check_program
    checked = next((p for p in parts if p.catalog is not None), None)
    if checked is None:
        return validate_program(Program(stages), complete=False)
    program = Program(stages, checked.catalog, catalog_obj=checked.catalog_obj,
                      generator=checked.generator)
    if any(isinstance(t, Restore) for s in stages for t in s.terms):
        # debias(clip_bias) depends on the stages before it: resolve it in the whole program.
        program = check_program(program, program.catalog_obj or CATALOGS[str(program.catalog)],
                                program.generator)
    return validate_program(program, complete=False)


def _single(program: Program, operation: str) -> tuple[Term, ...]:
    if len(program.stages) != 1:
        raise CompositionError(f"{operation} needs a one-stage program, got "
                               f"{len(program.stages)} stages",
                               hint="combine stages with .then(...) or '|'")
    return program.stages[0].terms


def _one_term(terms: tuple[Term, ...]) -> Term:
    return terms[0] if len(terms) == 1 else And(terms)


def conjoin(left: Program | Term, right: Program | Term) -> Program:
    """Return ``left & right``: the terms of both in one stage (energies add)."""
    parts = _unify([as_program(left), as_program(right)])
    terms = _single(parts[0], "'&'") + _single(parts[1], "'&'")
    return _build((Stage(terms),), parts)


def then(first: Program | Term, *others: Program | Term) -> Program:
    """Return ``first`` followed by the stages of ``others``."""
    parts = _unify([as_program(p) for p in (first, *others)])
    return _build(tuple(s for p in parts for s in p.stages), parts)


def extend(earlier: str | Program, later: str | Program | Term) -> Program:
    """Return the stages of ``earlier`` followed by those of ``later``, composed as graphs.

    Each text is parsed on its own (an artifact's canonical text and the stages added to it
    with ``--from``), so nothing in one can reach into the other: a trailing comment cannot
    swallow the stages after it. The result is unchecked; check it against the generator's
    catalog, which resolves ``debias(clip_bias)`` in a later stage from the earlier ones.
    """
    from energyql.lang.api import compile as compile_program

    first = compile_program(earlier) if isinstance(earlier, str) else as_program(earlier)
    second = compile_program(later) if isinstance(later, str) else as_program(later)
    return validate_program(Program(first.stages + second.stages), complete=False)


def joined_source(earlier: str, later: str, canonical: str, catalog: object) -> str:
    """Return the source text of ``earlier`` followed by ``later`` as stages.

    The two texts joined by a line break and ``| then`` (a line break ends a comment), when
    that text compiles against ``catalog`` to ``canonical``, the program actually trained;
    otherwise (``let`` bindings in ``later``, say) ``canonical`` itself.
    """
    from energyql.errors import EnergyQLError
    from energyql.lang.api import compile as compile_program

    text = f"{earlier}\n| then {later}"
    try:
        if str(compile_program(text, gen=catalog)) == canonical:
            return text
    except EnergyQLError:
        pass
    return canonical


def either(left: Program | Term, right: Program | Term) -> Program:
    """Return ``left or right`` (a soft OR)."""
    parts = _unify([as_program(left), as_program(right)])
    term = Or((_one_term(_single(parts[0], "'or'")), _one_term(_single(parts[1], "'or'"))))
    return _build((Stage((term,)),), parts)


def scale(program: Program, weight: float | Slider) -> Program:
    """Return ``weight * program`` (a slider weight is set at sample time)."""
    term = _one_term(_single(program, "a weight"))
    if isinstance(weight, Slider):
        if weight.low < 0:
            raise ArgumentError(f"the weight slider {weight.name!r} goes below 0",
                                hint="weights are ≥ 0")
        scaled_term: Term = Scale(1.0, term, weight)
    else:
        scaled_term = scaled(float(weight), term)
    return _build((Stage((scaled_term,)),), [program])


def negate(program: Program) -> Program:
    """Return ``not program`` (``~program``)."""
    term = Not(_one_term(_single(program, "'not'")))
    return _build((Stage((term,)),), [program])
