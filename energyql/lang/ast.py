"""The syntax tree: what the text says, with every node's source span and no meaning yet.

The parser builds these frozen dataclasses; :mod:`energyql.lang.bind` turns them into the
energy graph. Spans are kept so that later errors can point at the text.
"""

from __future__ import annotations

from dataclasses import dataclass

from energyql.errors import Span


@dataclass(frozen=True)
class Node:
    """Base of every syntax node."""

    span: Span


@dataclass(frozen=True)
class Ident(Node):
    """A name as written (``race``, ``clip_bias``, ``yaw``)."""

    name: str


@dataclass(frozen=True)
class NameRef(Node):
    """A bare name in term position: a binding, a yes/no attribute or an attribute's value."""

    name: Ident


@dataclass(frozen=True)
class Product(Node):
    """``a x b x c``: an attribute product (only meaningful inside constraints)."""

    names: tuple[Ident, ...]


@dataclass(frozen=True)
class Compare(Node):
    """``attr == value`` (``negated`` for ``!=``)."""

    attr: Ident
    value: Ident
    negated: bool = False


@dataclass(frozen=True)
class StringLit(Node):
    value: str


@dataclass(frozen=True)
class NumberLit(Node):
    value: float


@dataclass(frozen=True)
class SliderLit(Node):
    """``name in low..high``: a number set at sample time (or, as a control's positional
    argument, the range of one of its parameters)."""

    name: Ident
    low: NumberLit
    high: NumberLit


@dataclass(frozen=True)
class NotExpr(Node):
    operand: Expr


@dataclass(frozen=True)
class MulExpr(Node):
    """``a * b * c``: a weighted term once exactly one side is a term and the rest numbers."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class AndExpr(Node):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class OrExpr(Node):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class PosArg(Node):
    value: Expr


@dataclass(frozen=True)
class KwArg(Node):
    """``key = value``; the key is a product of names for joint ``dist`` entries."""

    key: tuple[Ident, ...]
    value: Expr


@dataclass(frozen=True)
class RangeArg(Node):
    """``name in low..high``: a free parameter of a conditional control."""

    name: Ident
    low: NumberLit
    high: NumberLit


Arg = PosArg | KwArg | RangeArg


@dataclass(frozen=True)
class Call(Node):
    func: Ident
    args: tuple[Arg, ...]


Expr = (NameRef | Product | Compare | StringLit | NumberLit | SliderLit | NotExpr | MulExpr
        | AndExpr | OrExpr | Call)


@dataclass(frozen=True)
class Let(Node):
    name: Ident
    value: Expr


@dataclass(frozen=True)
class Root(Node):
    """A whole program: its let bindings, then one expression per stage."""

    bindings: tuple[Let, ...]
    stages: tuple[Expr, ...]
