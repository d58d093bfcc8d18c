"""The expression language: text -> syntax tree -> checked energy graph. Never imports torch.

The modules, in the order text flows through them: :mod:`parser` (the only lark importer),
:mod:`ast`, :mod:`bind` (bindings, builtin calls, weights), :mod:`structure` (composition
rules), :mod:`check` (names against a catalog), :mod:`graph` (the energy graph),
:mod:`compose` and :mod:`api` (the Python face), :mod:`render` (tree and dict views).
"""

from energyql.lang.api import (
    Program,
    attr,
    clip,
    compile,
    control,
    debias,
    dist,
    keep,
    pose,
    slider,
    uniform,
)
from energyql.lang.graph import (
    And,
    Clip,
    Constraint,
    Control,
    DistSpec,
    Keep,
    Name,
    Not,
    Or,
    Param,
    Predicate,
    Scale,
    Slider,
    Stage,
    Term,
)

__all__ = [
    "And", "Clip", "Constraint", "Control", "DistSpec", "Keep", "Name", "Not", "Or", "Param",
    "Predicate", "Program", "Scale", "Slider", "Stage", "Term", "attr", "clip", "compile",
    "control", "debias", "dist", "keep", "pose", "slider", "uniform",
]
