"""Syntax tree -> unchecked energy graph.

Resolves ``let`` and ``env`` bindings (in that order; anything else is left as written for the
catalog check), reads the arguments of the builtin calls, multiplies weights out and applies
the composition rules of :mod:`energyql.lang.structure`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from energyql.errors import ArgumentError, CompositionError, ExpressionError, NameResolutionError
from energyql.lang import ast
from energyql.lang.diagnostics import error_at, suggest
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
    Origin,
    Param,
    Predicate,
    Program,
    Scale,
    Slider,
    Stage,
    Term,
    scaled,
)
from energyql.lang.structure import validate_program
from energyql.lang.visit import TermVisitor

BUILTINS = ("clip", "uniform", "debias", "dist", "keep")
CLIP_OPTIONS = ("model", "weight", "augment")
KEYWORDS = frozenset({"let", "then", "or", "not", "in", "x"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Most term nodes a program may expand to once its let bindings are substituted. A binding
#: used twice doubles in size, so a few short lines could otherwise ask for gigabytes; the
#: size is counted before each node is built, so the work stays bounded by this number.
MAX_TERMS = 10_000


# --- what a name can be bound to ----------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    """One catalog name or an attribute product, with the origins of its names."""

    names: tuple[str, ...]
    parts: tuple[Origin | None, ...]


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class TermValue:
    term: Term


@dataclass(frozen=True)
class SliderValue:
    slider: Slider


Binding = Names | Number | TermValue | SliderValue

_SLIDER_HINT = ("sliders set dist() probabilities and weights, e.g. dist(size, small = s in "
                "0.2..0.8) or (w in 0..3) * smiling")


def _kind(binding: Binding) -> str:
    if isinstance(binding, Number):
        return "a number"
    if isinstance(binding, SliderValue):
        return "a slider"
    if isinstance(binding, TermValue):
        return "a term"
    return "an attribute product" if len(binding.names) > 1 else "a name"


def bind(tree: ast.Root, source: str, env: Mapping[str, Binding] | None = None) -> Program:
    """Return the unchecked program of a parsed source."""
    return validate_program(_Binder(source, env or {}).program(tree))


def env_bindings(env: Mapping[str, object] | None) -> dict[str, Binding]:
    """Normalise ``compile(..., env=...)`` values: numbers, names, expression text, programs."""
    from energyql.lang.parser import parse

    out: dict[str, Binding] = {}
    for key, value in (env or {}).items():
        if not isinstance(key, str) or not _IDENT.match(key) or key in KEYWORDS:
            raise ArgumentError(f"env key {key!r} is not a usable name",
                                hint="names are letters, digits and '_', not a keyword")
        out[key] = _env_value(key, value, parse)
    return out


def _env_value(key: str, value: object, parse: Callable[[str], ast.Root]) -> Binding:
    from energyql.lang.graph import Program as _Program

    if isinstance(value, bool):
        raise ArgumentError(f"env['{key}'] is a bool; give a number, names or an expression")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ArgumentError(f"env['{key}'] is not a finite number")
        return Number(float(value))
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, str) for v in value):
        return Names(tuple(value), (None,) * len(value))
    if isinstance(value, Slider):
        return SliderValue(value)
    if isinstance(value, _Program):
        if len(value.stages) != 1:
            raise ArgumentError(f"env['{key}'] has {len(value.stages)} stages; bind one stage")
        terms = value.stages[0].terms
        return TermValue(terms[0] if len(terms) == 1 else And(terms))
    if isinstance(value, Term):
        return TermValue(value)
    if isinstance(value, str):
        label = f"env['{key}']"
        try:
            tree = parse(value)
        except ExpressionError as error:
            error.message = f"{error.message} (in {label})"
            raise
        if tree.bindings or len(tree.stages) != 1:
            raise ArgumentError(f"bind one expression without 'let' or 'then' (in {label})",
                                source=value, span=tree.span)
        return _Binder(value, {}, label).value(tree.stages[0])
    raise ArgumentError(f"env['{key}'] has unsupported type {type(value).__name__}",
                        hint="give a number, a tuple of names, expression text or a Program")


# --- the binder ---------------------------------------------------------------------------------


class _Binder(TermVisitor[Term]):
    """Builds the term of each syntax node (``on_<node>``), resolving bindings on the way."""

    def __init__(self, source: str, env: Mapping[str, Binding], label: str | None = None):
        self.source = source
        self.env = env
        self.label = label
        self.lets: dict[str, Binding] = {}
        self.builtins = {"clip": self.call_clip, "uniform": self.constraint,
                         "debias": self.constraint, "dist": self.call_dist, "keep": self.call_keep}
        # id(term) -> (term, expanded node count); the term is kept so that its id stays valid.
        self.sizes: dict[int, tuple[Term, int]] = {}

    def at(self, node: ast.Node) -> Origin:
        return Origin(self.source, node.span, self.label)

    def fail(self, kind: type[ExpressionError], message: str, node: ast.Node,
             hint: str | None = None) -> ExpressionError:
        return error_at(kind, message, self.at(node), hint)

    def lookup(self, name: str) -> Binding | None:
        if name in self.lets:
            return self.lets[name]
        return self.env.get(name)

    # -- program and bindings
    def program(self, tree: ast.Root) -> Program:
        for let in tree.bindings:
            if let.name.name in self.lets:
                raise self.fail(NameResolutionError, f"'{let.name.name}' is already bound",
                                let.name, "give each let binding its own name")
            self.lets[let.name.name] = self.value(let.value)
        stages = []
        total = 0
        for expr in tree.stages:
            terms = self.stage_terms(expr)
            total += sum(self.size(t) for t in terms)
            if total > MAX_TERMS:
                raise self.too_large(expr)
            stages.append(Stage(terms))
        return Program(tuple(stages), None, source=self.source)

    # -- the expanded-size bound
    def size(self, term: Term) -> int:
        """Return the node count of ``term`` with shared subterms counted at every use."""
        known = self.sizes.get(id(term))
        if known is not None:
            return known[1]
        stack: list[tuple[Term, bool]] = [(term, False)]
        while stack:
            node, ready = stack.pop()
            if id(node) in self.sizes:
                continue
            if not ready:
                stack.append((node, True))
                stack.extend((c, False) for c in node.children if id(c) not in self.sizes)
                continue
            count = 1 + sum(self.sizes[id(c)][1] for c in node.children)
            self.sizes[id(node)] = (node, count)
        return self.sizes[id(term)][1]

    def too_large(self, expr: ast.Node) -> ExpressionError:
        return self.fail(ExpressionError, f"expression too large: it expands to more than "
                         f"{MAX_TERMS:,} terms", expr, "each use of a let binding copies its "
                         "value; bind smaller pieces, or name each term once")

    def built(self, expr: ast.Node, make: Callable[[tuple[Term, ...]], Term],
              children: tuple[Term, ...]) -> Term:
        """Return ``make(children)`` after checking the expanded size it will have."""
        count = 1 + sum(self.size(c) for c in children)
        if count > MAX_TERMS:
            raise self.too_large(expr)
        term = make(children)
        self.sizes[id(term)] = (term, count)
        return term

    def stage_terms(self, expr: ast.Expr) -> tuple[Term, ...]:
        term = self.term(expr)
        return term.terms if isinstance(term, And) else (term,)

    def value(self, expr: ast.Expr) -> Binding:
        if isinstance(expr, ast.NameRef):
            return self.lookup(expr.name.name) or Names((expr.name.name,), (self.at(expr),))
        if isinstance(expr, ast.Product):
            return Names(*self.attribute_names(expr.names, "a product"))
        if isinstance(expr, ast.NumberLit):
            return Number(expr.value)
        if isinstance(expr, ast.SliderLit):
            return SliderValue(self.slider(expr))
        return TermValue(self.term(expr))

    def attribute_names(self, idents: Iterable[ast.Ident],
                        where: str) -> tuple[tuple[str, ...], tuple[Origin | None, ...]]:
        names: list[str] = []
        parts: list[Origin | None] = []
        for ident in idents:
            bound = self.lookup(ident.name)
            if bound is None:
                names.append(ident.name)
                parts.append(self.at(ident))
            elif isinstance(bound, Names):
                names.extend(bound.names)
                parts.extend(bound.parts)
            else:
                raise self.fail(ArgumentError, f"'{ident.name}' is bound to {_kind(bound)}, "
                                f"but {where} takes attribute names", ident)
        return tuple(names), tuple(parts)

    def single_name(self, ident: ast.Ident, what: str) -> tuple[str, Origin | None]:
        bound = self.lookup(ident.name)
        if bound is None:
            return ident.name, self.at(ident)
        if isinstance(bound, Names) and len(bound.names) == 1:
            return bound.names[0], bound.parts[0]
        raise self.fail(ArgumentError, f"'{ident.name}' is bound to {_kind(bound)}, "
                        f"but {what} is expected here", ident)

    # -- terms
    def term(self, expr: ast.Expr) -> Term:
        return self.visit(expr)

    def on_name_ref(self, expr: ast.NameRef) -> Term:
        name = expr.name.name
        bound = self.lookup(name)
        if bound is None:
            return Name(name, origin=self.at(expr))
        if isinstance(bound, TermValue):
            return bound.term
        if isinstance(bound, (Number, SliderValue)):
            raise self.fail(ArgumentError, f"'{name}' is {_kind(bound)}, not a term", expr,
                            f"weights multiply terms, e.g. {name} * smiling")
        if len(bound.names) > 1:
            raise self.fail(CompositionError, f"'{name}' is an attribute product "
                            f"({' x '.join(bound.names)}), not a term", expr,
                            f"use it in uniform({name}), debias({name}) or dist({name}, ...)")
        return Name(bound.names[0], origin=bound.parts[0] or self.at(expr))

    def on_product(self, expr: ast.Product) -> Term:
        text = " x ".join(i.name for i in expr.names)
        raise self.fail(CompositionError, f"the attribute product '{text}' is not a term", expr,
                        f"use it in uniform({text}), debias({text}) or dist({text}, ...)")

    def on_compare(self, expr: ast.Compare) -> Term:
        attr, attr_at = self.single_name(expr.attr, "an attribute name")
        value, value_at = self.single_name(expr.value, "a value name")
        predicate = Predicate(attr, value, origin=self.at(expr), parts=(attr_at, value_at))
        return Not(predicate, origin=self.at(expr)) if expr.negated else predicate

    def on_string_lit(self, expr: ast.StringLit) -> Term:
        raise self.fail(ArgumentError, "a string is not a term on its own", expr,
                        f"wrap the prompt in clip(...), e.g. clip({self.text(expr)})")

    def on_number_lit(self, expr: ast.NumberLit) -> Term:
        raise self.fail(ArgumentError, "a number is not a term on its own", expr,
                        "weights multiply terms, e.g. 2 * smiling")

    def on_slider_lit(self, expr: ast.SliderLit) -> Term:
        raise self.fail(ArgumentError, f"the slider '{self.text(expr)}' is a number, not a term",
                        expr, _SLIDER_HINT)

    def slider(self, expr: ast.SliderLit) -> Slider:
        """The slider a ``name in low..high`` literal writes (a non-empty range)."""
        low, high = expr.low.value, expr.high.value
        if not low < high:
            raise self.fail(ArgumentError, f"the slider '{expr.name.name}' has the empty range "
                            f"{self.text(expr.low)}..{self.text(expr.high)}", expr,
                            "write the lower bound first; for a fixed value write the number")
        if expr.name.name in KEYWORDS:
            raise self.fail(ArgumentError, f"'{expr.name.name}' is a keyword, not a slider name",
                            expr.name)
        return Slider(expr.name.name, low, high, origin=self.at(expr))

    def on_not_expr(self, expr: ast.NotExpr) -> Term:
        return self.built(expr, lambda c: Not(c[0], origin=self.at(expr)),
                          (self.term(expr.operand),))

    def on_and_expr(self, expr: ast.AndExpr) -> Term:
        return self.built(expr, lambda c: And(c, origin=self.at(expr)),
                          tuple(self.term(e) for e in expr.items))

    def on_or_expr(self, expr: ast.OrExpr) -> Term:
        return self.built(expr, lambda c: Or(c, origin=self.at(expr)),
                          tuple(self.term(e) for e in expr.items))

    def on_mul_expr(self, expr: ast.MulExpr) -> Term:
        weight, terms = 1.0, []
        slider: tuple[ast.Expr, Slider] | None = None
        for item in expr.items:
            number = self.amount(item)
            if number is None:
                terms.append((item, self.term(item)))
            elif isinstance(number, Slider):
                if slider is not None:
                    raise self.fail(CompositionError, "a weight multiplies two sliders "
                                    f"('{slider[1].name}' and '{number.name}')", item,
                                    "give the term one slider weight")
                slider = (item, self.weight_slider(number, item))
            else:
                weight *= number
        if not terms:
            raise self.fail(ArgumentError, "a weight needs a term to multiply", expr,
                            "e.g. 2 * smiling")
        if len(terms) > 1:
            raise self.fail(CompositionError, "'*' multiplies a term by a number, but "
                            f"{self.text(terms[1][0])!r} is a term too", terms[1][0],
                            "combine terms with '&' (both) or 'or' (either)")
        return self.weighted(weight, slider[1] if slider else None, terms[0][1], expr)

    def weighted(self, weight: float, slider: Slider | None, term: Term,
                 expr: ast.Node) -> Term:
        """``weight * term``, times a slider's value when one is given."""
        term = scaled(weight, term, self.at(expr))
        if slider is None:
            return term
        return Scale(1.0, term, slider, origin=self.at(expr))

    def weight_slider(self, slider: Slider, node: ast.Node) -> Slider:
        if slider.low < 0:
            raise self.fail(ArgumentError, f"the weight slider '{slider.name}' goes below 0 "
                            f"({slider.low:g})", node, "weights are ≥ 0; to push away from a "
                            "predicate use 'not', e.g. (w in 0..3) * not smiling")
        return slider

    def amount(self, expr: ast.Expr) -> float | Slider | None:
        """A number or a slider written (or bound) at ``expr``; None for anything else."""
        if isinstance(expr, ast.SliderLit):
            return self.slider(expr)
        if isinstance(expr, ast.NameRef):
            bound = self.lookup(expr.name.name)
            if isinstance(bound, SliderValue):
                return bound.slider
        return self.number(expr)

    def number(self, expr: ast.Expr) -> float | None:
        """A fixed number written (or bound) at ``expr``; a slider here is an error."""
        if isinstance(expr, ast.SliderLit) or (
                isinstance(expr, ast.NameRef)
                and isinstance(self.lookup(expr.name.name), SliderValue)):
            raise self.fail(ArgumentError, f"a slider cannot stand here: "
                            f"'{self.text(expr)}' needs a fixed number", expr, _SLIDER_HINT)
        if isinstance(expr, ast.NumberLit):
            return expr.value
        if isinstance(expr, ast.NameRef):
            bound = self.lookup(expr.name.name)
            if isinstance(bound, Number):
                return bound.value
        return None

    def text(self, node: ast.Node) -> str:
        return self.source[node.span.start:node.span.end]

    # -- calls
    def on_call(self, call: ast.Call) -> Term:
        func = call.func.name
        builtin = self.builtins.get(func)
        return builtin(call) if builtin is not None else self.control(call)

    def split(self, call: ast.Call, keywords: tuple[str, ...] = (),
              ) -> tuple[list[ast.Expr], dict[str, ast.KwArg]]:
        """Return the positional args and ``{key: KwArg}``; refuse ranges and unknown keys."""
        positional, named = [], {}
        func = call.func.name
        for arg in call.args:
            if isinstance(arg, ast.PosArg):
                positional.append(arg.value)
                continue
            if isinstance(arg, ast.RangeArg):
                raise self.fail(ArgumentError, f"{func}() takes no parameter ranges", arg,
                                "ranges belong to controls, e.g. pose(yaw in -30..30)")
            key = " x ".join(i.name for i in arg.key)
            if key not in keywords:
                raise self.fail(ArgumentError, f"{func}() has no option '{key}'", arg,
                                suggest(key, keywords, f"options of {func}()"))
            if key in named:
                raise self.fail(ArgumentError, f"option '{key}' given twice", arg)
            named[key] = arg
        return positional, named

    def call_clip(self, call: ast.Call) -> Term:
        positional, named = self.split(call, CLIP_OPTIONS)
        if not positional:
            raise self.fail(ArgumentError, "clip() needs a prompt", call,
                            'write clip("a smiling man")')
        prompt = positional[0]
        if not isinstance(prompt, ast.StringLit):
            raise self.fail(ArgumentError, "the prompt of clip() must be a quoted string",
                            prompt, f'write clip("{self.text(prompt)}")')
        if len(positional) > 1:
            raise self.fail(ArgumentError, "clip() takes one prompt", positional[1],
                            "join the words into one quoted prompt")
        if not prompt.value.strip():
            raise self.fail(ArgumentError, "the prompt of clip() is empty", prompt)
        model = None
        if "model" in named:
            given = named["model"].value
            if not isinstance(given, ast.StringLit) or not given.value.strip():
                raise self.fail(ArgumentError, "model= takes a quoted model name", given,
                                'e.g. model="ViT-B-32:openai"')
            model = given.value
        augment = None
        if "augment" in named:
            count = self.number(named["augment"].value)
            if count is None or count != int(count) or not 1 <= count <= 1024:
                raise self.fail(ArgumentError, "augment= takes a whole number from 1 to 1024",
                                named["augment"].value)
            augment = int(count)
        term: Term = Clip(prompt.value, model, augment, origin=self.at(call))
        if "weight" in named:
            given = named["weight"].value
            weight = self.amount(given)
            if weight is None:
                raise self.fail(ArgumentError, "weight= takes a number", given)
            if isinstance(weight, Slider):
                term = self.weighted(1.0, self.weight_slider(weight, given), term, call)
            else:
                term = scaled(weight, term, self.at(call))
        return term

    def attributes_arg(self, call: ast.Call, positional: list[ast.Expr],
                       ) -> tuple[tuple[str, ...], tuple[Origin | None, ...]]:
        func = call.func.name
        if not positional:
            raise self.fail(ArgumentError, f"{func}() needs attributes", call,
                            f"e.g. {func}(race) or {func}(race x age)")
        first = positional[0]
        if isinstance(first, ast.NameRef):
            return self.attribute_names((first.name,), f"{func}()")
        if isinstance(first, ast.Product):
            return self.attribute_names(first.names, f"{func}()")
        raise self.fail(ArgumentError, f"{func}() takes attribute names, not "
                        f"'{self.text(first)}'", first, f"e.g. {func}(race x age)")

    def constraint(self, call: ast.Call) -> Term:
        func = call.func.name
        positional, _ = self.split(call)
        attrs, parts = self.attributes_arg(call, positional)
        if len(positional) > 1:
            raise self.fail(ArgumentError, f"{func}() takes one attribute or product",
                            positional[1], f"for the joint of several attributes write "
                            f"{func}({' x '.join(self.text(p) for p in positional)})")
        return Constraint(func, attrs, (), origin=self.at(call), parts=parts)

    def call_dist(self, call: ast.Call) -> Term:
        positional: list[ast.Expr] = []
        entries: list[tuple[tuple[str, ...], float | Slider]] = []
        entry_parts: list[tuple[Origin, ...]] = []
        for arg in call.args:
            if isinstance(arg, ast.PosArg):
                if entries:
                    raise self.fail(ArgumentError, "dist() takes its attributes first, then "
                                    "value=probability entries", arg)
                positional.append(arg.value)
            elif isinstance(arg, ast.RangeArg):
                raise self.fail(ArgumentError, "dist() takes no parameter ranges", arg)
            else:
                probability = self.amount(arg.value)
                if isinstance(probability, Slider):
                    if not 0.0 <= probability.low < probability.high <= 1.0:
                        raise self.fail(ArgumentError, f"the slider '{probability.name}' sets a "
                                        "probability, so its range must lie in 0..1, not "
                                        f"{probability.low:g}..{probability.high:g}", arg.value,
                                        "e.g. dist(size, small = s in 0.2..0.8)")
                elif probability is None or not 0.0 <= probability <= 1.0:
                    raise self.fail(ArgumentError, "a dist() entry takes a probability from 0 "
                                    f"to 1, not '{self.text(arg.value)}'", arg.value,
                                    "e.g. dist(size, small=0.3, large=0.7)")
                entries.append((tuple(i.name for i in arg.key), probability))
                entry_parts.append(tuple(self.at(i) for i in arg.key))
        attrs, parts = self.attributes_arg(call, positional)
        if len(positional) > 1:
            raise self.fail(ArgumentError, "dist() takes one attribute or product",
                            positional[1], "e.g. dist(gender x smiling, female x yes=0.4, ...)")
        if not entries:
            raise self.fail(ArgumentError, "dist() needs value=probability entries", call,
                            f"e.g. dist({' x '.join(attrs)}, VALUE=0.5); for equal shares "
                            f"write uniform({' x '.join(attrs)})")
        return DistSpec(attrs, tuple(entries), origin=self.at(call),
                        parts=(parts, tuple(entry_parts)))

    def call_keep(self, call: ast.Call) -> Term:
        positional, _ = self.split(call)
        if len(positional) != 1 or not isinstance(positional[0], ast.NameRef):
            raise self.fail(ArgumentError, "keep() takes one name", call, "e.g. keep(identity)")
        return Keep(positional[0].name.name, origin=self.at(positional[0]))

    def control(self, call: ast.Call) -> Term:
        func = call.func.name
        params: list[Param] = []
        for arg in call.args:
            if not isinstance(arg, ast.RangeArg):
                if not _is_control(func):
                    raise self.fail(NameResolutionError, f"unknown function '{func}'",
                                    call.func, suggest(func, BUILTINS, "functions") +
                                    " and the generator's controls, e.g. pose(yaw in -30..30)")
                raise self.fail(ArgumentError, f"a control takes parameter ranges, not "
                                f"'{self.text(arg)}'", arg,
                                f"e.g. {func}(yaw in -30..30); functions: "
                                + ", ".join(BUILTINS) + " and the generator's controls")
            low, high = arg.low.value, arg.high.value
            if low > high:
                raise self.fail(ArgumentError, f"empty range {self.text(arg.low)}.."
                                f"{self.text(arg.high)}", arg, "write the lower bound first")
            if any(p.name == arg.name.name for p in params):
                raise self.fail(ArgumentError, f"parameter '{arg.name.name}' given twice", arg)
            params.append(Param(arg.name.name, low, high, origin=self.at(arg.name)))
        if not params:
            raise self.fail(ArgumentError, f"{func}() needs at least one parameter range", call,
                            f"e.g. {func}(yaw in -30..30)")
        return Control(func, tuple(params), origin=self.at(call))


def _is_control(name: str) -> bool:
    """True if some catalog offers a control called ``name`` (binding knows no catalog yet)."""
    from energyql.catalog import CATALOGS

    return any(catalog.control(name) is not None for catalog in CATALOGS.values())
