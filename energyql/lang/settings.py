"""A program at one slider setting: every slider replaced by its value (torch-free).

``program_at(program, {"p": 0.3})`` is the program a flow trained at ``p = 0.3`` alone would
have: ``dist(color, blue=p in 0.1..0.9)`` becomes ``dist(color, red=0.35, green=0.35,
blue=0.3)``. A weight slider at 0 removes its term.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from energyql.errors import UsageError
from energyql.lang.graph import Constraint, Program, Scale, Slider, Stage, Term, scaled


def check_setting(sliders: tuple[Slider, ...], values: Mapping[str, object]) -> dict[str, float]:
    """Return a full setting (unnamed sliders at the middle of their ranges) if every value
    names a slider and lies in its range; else a UsageError that gives the ranges."""
    ranges = ", ".join(str(s) for s in sliders)
    known = {s.name: s for s in sliders}
    setting = {s.name: s.middle for s in sliders}
    for name, value in values.items():
        if name not in known:
            raise UsageError(f"'{name}' is not a slider of this program" if sliders
                             else f"this program has no sliders (got '{name}')",
                             hint=f"its sliders: {ranges}" if sliders else
                             "only programs written with NAME in LOW..HIGH take settings")
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise UsageError(f"slider value {name}={value!r} is not a number") from None
        slider = known[name]
        if not math.isfinite(number) or not slider.low <= number <= slider.high:
            raise UsageError(f"slider value {name}={number:g} is outside its range "
                             f"{slider.low:g}..{slider.high:g}",
                             hint=f"give {slider}: the flow was trained only there")
        setting[name] = number
    return setting


def program_at(program: Program, values: Mapping[str, object]) -> Program:
    """Return ``program`` with every slider at its value (middles for those not given)."""
    setting = check_setting(program.sliders, values)
    stages = []
    for index, stage in enumerate(program.stages, 1):
        terms = [t for t in (_term_at(t, setting) for t in stage.terms) if t is not None]
        if not terms:
            raise UsageError(f"at {_describe(setting)} stage {index} asks for nothing (every "
                             "term's weight is 0)", hint="give a weight slider a value above 0")
        stages.append(Stage(tuple(terms)))
    return Program(tuple(stages), program.catalog, source=str(program),
                   catalog_obj=program.catalog_obj, generator=program.generator)


def _term_at(term: Term, setting: Mapping[str, float]) -> Term | None:
    if isinstance(term, Scale) and term.slider is not None:
        weight = term.weight_at(setting)
        return None if weight == 0 else scaled(weight, term.term, term.origin)
    if isinstance(term, Constraint) and term.sliders:
        return Constraint(term.kind, term.attrs, term.target_at(setting), origin=term.origin,
                          values=term.values, parts=term.parts)
    return term


def _describe(setting: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in setting.items())


__all__ = ["check_setting", "program_at"]
