"""The energy graph: stages of terms, plain frozen data that the trainer lowers to energies.

Every node is hashable and compares by meaning: source positions ride along in fields that
take no part in equality (``origin``, ``parts``). ``str(node)`` prints canonical source that
parses back to an equal node. A :class:`Program` whose ``catalog`` is None is *unchecked*: its
names are as written (it may hold :class:`Name` and :class:`DistSpec`); ``program.checked(cat)``
resolves them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from energyql.errors import ArgumentError, CompositionError, Span
from energyql.lang.diagnostics import error_at
from energyql.lang.visit import TermVisitor

if TYPE_CHECKING:
    from rich.console import Group

    from energyql.catalog import Catalog

_T = TypeVar("_T", bound="Term")


@dataclass(frozen=True)
class Origin:
    """Where a node came from: the source text, the span in it, and which text that is when
    it is not the main expression (e.g. ``"env['face']"``)."""

    source: str
    span: Span
    label: str | None = None


@dataclass(frozen=True)
class Term:
    """Base of every term. ``origin`` is the node's source span (never compared)."""

    origin: Origin | None = field(default=None, compare=False, repr=False, kw_only=True)

    def __str__(self) -> str:
        return to_source(self)

    def walk(self) -> Iterator[Term]:
        """Yield this term and every term below it, parents first."""
        stack: list[Term] = [self]
        while stack:
            term = stack.pop()
            yield term
            stack.extend(reversed(term.children))

    @property
    def children(self) -> tuple[Term, ...]:
        return ()

    @property
    def is_probability(self) -> bool:
        """True for terms that denote a probability (predicates and their not/and/or)."""
        return is_probability(self)

    @property
    def predicates(self) -> tuple[Predicate, ...]:
        return tuple(t for t in self.walk() if isinstance(t, Predicate))

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


# --- pointwise terms ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip(Term):
    """``clip("text")``: w·(1 − cos(img_emb(aug(x)), text_emb)); ``model=None``: catalog's CLIP."""

    text: str
    model: str | None = None
    augment: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "clip", "text": self.text, "model": self.model, "augment": self.augment}


@dataclass(frozen=True)
class Predicate(Term):
    """``attr == value``: −log p(value | x) from the attribute's classifier.

    ``parts`` holds the origins of the attribute and the value names.
    """

    attr: str
    value: str
    parts: tuple[Any, ...] = field(default=(), compare=False, repr=False, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "predicate", "attr": self.attr, "value": self.value}


@dataclass(frozen=True)
class Name(Term):
    """A bare name not yet resolved against a catalog (unchecked programs only)."""

    name: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "name", "name": self.name}


@dataclass(frozen=True)
class Not(Term):
    """``not P``: −log(1 − p) over a probability-valued term."""

    term: Term

    @property
    def children(self) -> tuple[Term, ...]:
        return (self.term,)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "not", "term": self.term.to_dict()}


def _flatten(kind: type[_Flat], terms: Iterable[Term]) -> tuple[Term, ...]:
    out: list[Term] = []
    for term in terms:
        out.extend(term.terms if isinstance(term, kind) else (term,))
    return tuple(out)


@dataclass(frozen=True)
class _Flat(Term):
    """An n-ary combinator whose nested instances of itself are flattened into one."""

    terms: tuple[Term, ...]
    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", _flatten(type(self), self.terms))

    @property
    def children(self) -> tuple[Term, ...]:
        return self.terms

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "terms": [t.to_dict() for t in self.terms]}


@dataclass(frozen=True)
class And(_Flat):
    """``A & B & ...``: product of experts, energies add. Always flat."""

    kind: ClassVar[str] = "and"


@dataclass(frozen=True)
class Or(_Flat):
    """``A or B``: −log(pA + pB − pA·pB) for predicates, else −logsumexp(−E). Always flat."""

    kind: ClassVar[str] = "or"


@dataclass(frozen=True)
class Param:
    """``name in low..high``: a free parameter of a conditional control."""

    name: str
    low: float
    high: float
    origin: Origin | None = field(default=None, compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Slider(Param):
    """``name in low..high``: a number of the expression set at sample time.

    One flow per stage is trained over the whole range (the slider is part of its context);
    ``energyql sample --set name=v`` picks the value. Two sliders with one name are one value.
    """

    def __str__(self) -> str:
        return f"{self.name} in {format_number(self.low)}..{format_number(self.high)}"

    @property
    def middle(self) -> float:
        return (self.low + self.high) / 2

    def __mul__(self, other: object) -> Program:
        if not isinstance(other, Program):
            return NotImplemented
        from energyql.lang.compose import scale

        return scale(other, self)

    __rmul__ = __mul__


#: A number of the expression: fixed, or a slider.
Amount = float | Slider


def amount_at(amount: Amount, values: Mapping[str, float]) -> float:
    """Return a number, or a slider's value in ``values``."""
    return float(values[amount.name]) if isinstance(amount, Slider) else float(amount)


@dataclass(frozen=True)
class Scale(Term):
    """``w * A``: the energy of A times w (> 0), and times a slider's value when ``slider`` is
    set (``(s in 0..3) * A``; the slider may reach 0). Nested scales multiply out."""

    weight: float
    term: Term
    slider: Slider | None = None

    def __post_init__(self) -> None:
        weight, term, slider = float(self.weight), self.term, self.slider
        while isinstance(term, Scale):
            if slider is not None and term.slider is not None:
                raise error_at(CompositionError, "a weight multiplies two sliders "
                               f"('{slider.name}' and '{term.slider.name}')", self.origin,
                               "give the term one slider weight")
            weight, slider, term = weight * term.weight, slider or term.slider, term.term
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "term", term)
        object.__setattr__(self, "slider", slider)

    @property
    def children(self) -> tuple[Term, ...]:
        return (self.term,)

    def weight_at(self, values: Mapping[str, float]) -> float:
        """The weight at slider values (the fixed weight for a fixed scale)."""
        return self.weight * (amount_at(self.slider, values) if self.slider else 1.0)

    def to_dict(self) -> dict[str, Any]:
        data = {"type": "scale", "weight": self.weight, "term": self.term.to_dict()}
        if self.slider is not None:
            data["slider"] = self.slider.to_dict()
        return data


# --- stage-level terms --------------------------------------------------------------------------

# Where a constraint's target comes from (ConstraintKind.target).
UNIFORM_TARGET = "uniform"  # equal over the cells of its joint
GIVEN_TARGET = "given"  # written in the expression
DEFERRED_TARGET = "deferred"  # estimated from the root generator when training


@dataclass(frozen=True)
class ConstraintKind:
    """One kind of distributional constraint: where its target comes from and how it is shown.

    Arguments:
        name: its name in programs, manifests and canonical text (``"uniform"``).
        target: :data:`UNIFORM_TARGET`, :data:`GIVEN_TARGET` (its text lists the target) or
            :data:`DEFERRED_TARGET` (estimated when training; it prints as a label only).
        label: what its target is, in words (``energyql check --json``: ``target_is``).
        keyed_by_text: its figures (``kl_to_target``, ``tv_to_target``) are keyed by its text,
            not by its attributes (two of them may constrain the same attributes).
    """

    name: str
    target: str
    label: str
    keyed_by_text: bool = False

    def metric_key(self, constraint: Constraint) -> str:
        """Return the key of a constraint's figures in metrics."""
        return str(constraint) if self.keyed_by_text else " x ".join(constraint.attrs)


UNIFORM = ConstraintKind("uniform", UNIFORM_TARGET, "uniform over its cells")
DEBIAS = ConstraintKind("debias", UNIFORM_TARGET, "uniform over its cells (de-biased)")
DIST = ConstraintKind("dist", GIVEN_TARGET, "the distribution written", keyed_by_text=True)
#: ``debias(clip_bias)`` resolves to these: the attribute brought back to the root generator's
#: distribution given what was asked (a target estimated when training).
RESTORE_KIND = ConstraintKind("restore", DEFERRED_TARGET, "p0(· | what was asked)",
                              keyed_by_text=True)
#: Every constraint kind by name: the one table the checker, printer, lowering and metrics read.
KINDS: dict[str, ConstraintKind] = {k.name: k for k in (UNIFORM, DEBIAS, DIST, RESTORE_KIND)}
#: The kinds an expression may write (``restore`` comes only from ``debias(clip_bias)``).
CONSTRAINT_KINDS = tuple(name for name, k in KINDS.items() if k.target != DEFERRED_TARGET)
RESTORE = RESTORE_KIND.name
#: The name that ``debias(...)`` resolves from the program itself (see :class:`Restore`).
CLIP_BIAS = "clip_bias"


@dataclass(frozen=True)
class Constraint(Term):
    """A distributional constraint on the joint of ``attrs``.

    ``target`` lists the wanted probability of every joint value in ``itertools.product`` order
    of each attribute's catalog values (empty while unchecked, and for kind ``"restore"``, whose
    target p0(attrs | given) is estimated from the root generator when training); ``values``
    gives those value names per attribute (filled by checking, never compared). ``given``: the
    probability-valued terms a ``"restore"`` target is conditioned on. ``parts``: origins.
    """

    kind: str
    attrs: tuple[str, ...]
    target: tuple[float, ...] = ()
    values: tuple[tuple[str, ...], ...] = field(default=(), compare=False, repr=False, kw_only=True)
    parts: tuple[Any, ...] = field(default=(), compare=False, repr=False, kw_only=True)
    given: tuple[Term, ...] = field(default=(), kw_only=True)
    #: ``dist`` entries set by sliders: (cell index, slider); ``target`` holds their middles.
    sliders: tuple[tuple[int, Slider], ...] = field(default=(), kw_only=True)
    #: The cells that share what the listed entries leave of 1 (kept for slider targets).
    free: tuple[int, ...] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CompositionError(f"unknown constraint kind '{self.kind}'",
                                   hint="constraint kinds: " + ", ".join(KINDS))
        object.__setattr__(self, "attrs", tuple(self.attrs))
        object.__setattr__(self, "target", tuple(float(p) for p in self.target))
        object.__setattr__(self, "given", tuple(self.given))
        object.__setattr__(self, "sliders", tuple(self.sliders))
        object.__setattr__(self, "free", tuple(self.free))

    def target_at(self, values: Mapping[str, float]) -> tuple[float, ...]:
        """The target with every slider at its value in ``values`` (the fixed target if none)."""
        if not self.sliders:
            return self.target
        target = list(self.target)
        for cell, slider in self.sliders:
            target[cell] = amount_at(slider, values)
        if self.free:
            left = 1.0 - sum(p for i, p in enumerate(target) if i not in self.free)
            # Rounded to 12 digits as the checker rounds a dist's shares, so that the printed
            # target of a setting reads cleanly and parses back equal.
            share = float(f"{max(left, 0.0) / len(self.free):.12g}")
            for cell in self.free:
                target[cell] = share
        return tuple(target)

    @property
    def rule(self) -> ConstraintKind:
        """Its kind's entry of :data:`KINDS` (target rule, label, metric key)."""
        return KINDS[self.kind]

    @property
    def metric_key(self) -> str:
        """The key of its figures in metrics (``"race x age"``, or its text)."""
        return self.rule.metric_key(self)

    @property
    def cells(self) -> tuple[tuple[str, ...], ...]:
        """The joint values in target order (needs a checked constraint)."""
        import itertools

        return tuple(itertools.product(*self.values))

    @property
    def size(self) -> int:
        """Return the number of joint values (needs a checked constraint)."""
        return math.prod(len(v) for v in self.values) if self.values else len(self.target)

    @property
    def deferred(self) -> bool:
        """True when the target is estimated at training time (kind ``"restore"``)."""
        return self.rule.target == DEFERRED_TARGET

    def to_dict(self) -> dict[str, Any]:
        data = {"type": "constraint", "kind": self.kind, "attrs": list(self.attrs),
                "target": list(self.target), "values": [list(v) for v in self.values]}
        if self.deferred:
            data["given"] = [to_source(t) for t in self.given]
        if self.sliders:
            data["sliders"] = [[cell, slider.to_dict()] for cell, slider in self.sliders]
            data["free"] = list(self.free)
        return data


@dataclass(frozen=True)
class Resolution:
    """Why ``debias(clip_bias)`` resolved as it did (shown by ``energyql check``).

    ``matched``: (prompt, word, attribute, value) for each prompt word that asks for a value;
    ``asked`` and ``constrained``: (attribute, why) for each attribute left out; ``dropped``:
    (earlier constraint, why) for earlier constraints not re-asserted.
    """

    matched: tuple[tuple[str, str, str, str], ...] = ()
    asked: tuple[tuple[str, str], ...] = ()
    constrained: tuple[tuple[str, str], ...] = ()
    dropped: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"matched": [{"prompt": p, "word": w, "attr": a, "value": v}
                            for p, w, a, v in self.matched],
                "asked": {a: why for a, why in self.asked},
                "constrained": {a: why for a, why in self.constrained},
                "dropped": {c: why for c, why in self.dropped}}


@dataclass(frozen=True)
class Restore(Term):
    """``debias(clip_bias)`` resolved against the program and its catalog.

    ``restores`` holds one ``"restore"`` constraint per attribute that no earlier stage
    constrains or asks for (target p0(a | what was asked), estimated when training);
    ``reasserts`` the earlier stages' constraints, held again so that they keep holding. It is a
    pure function of the program and the catalog, so it prints as written and checking that
    text again gives an equal node. ``resolution`` records why (never compared).
    """

    name: str
    restores: tuple[Constraint, ...]
    reasserts: tuple[Constraint, ...] = ()
    resolution: Resolution = field(default=Resolution(), compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "restores", tuple(self.restores))
        object.__setattr__(self, "reasserts", tuple(self.reasserts))

    @property
    def constraints(self) -> tuple[Constraint, ...]:
        """Every constraint this stage fits for it: the restores, then the re-asserted ones."""
        return self.restores + self.reasserts

    @property
    def children(self) -> tuple[Term, ...]:
        return self.constraints

    @property
    def restored(self) -> tuple[str, ...]:
        """The attributes brought back to the generator's distribution given what was asked."""
        return tuple(a for c in self.restores for a in c.attrs)

    @property
    def given(self) -> tuple[Term, ...]:
        """What the restore targets are conditioned on (the asked-for predicates)."""
        return self.restores[0].given if self.restores else ()

    def to_dict(self) -> dict[str, Any]:
        return {"type": "restore", "name": self.name, "restored": list(self.restored),
                "given": [to_source(t) for t in self.given],
                "reasserted": [to_source(c) for c in self.reasserts],
                "constraints": [c.to_dict() for c in self.constraints],
                "resolution": self.resolution.to_dict()}


@dataclass(frozen=True)
class DistSpec(Term):
    """``dist(attrs, key=p, ...)`` as written (unchecked programs only); checking makes it a
    :class:`Constraint` of kind ``"dist"``. ``parts``: origins of the attribute names, then of
    each entry."""

    attrs: tuple[str, ...]
    entries: tuple[tuple[tuple[str, ...], Amount], ...]
    parts: tuple[Any, ...] = field(default=(), compare=False, repr=False, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "dist", "attrs": list(self.attrs),
                "entries": [[list(k), p.to_dict() if isinstance(p, Slider) else p]
                            for k, p in self.entries]}


@dataclass(frozen=True)
class Control(Term):
    """``pose(yaw in -30..30)``: a conditional control whose parameters become flow context."""

    name: str
    params: tuple[Param, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(self.params))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "control", "name": self.name, "params": [p.to_dict() for p in self.params]}


@dataclass(frozen=True)
class Keep(Term):
    """``keep(identity)``: a paired energy keeping ``what`` fixed across a control's sweep."""

    what: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "keep", "what": self.what}


STAGE_LEVEL = (Constraint, DistSpec, Control, Keep, Restore)


@dataclass(frozen=True)
class Stage:
    """One stage: its top-level conjuncts (energies add). Never holds an :class:`And`."""

    terms: tuple[Term, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", _flatten(And, self.terms))

    def __str__(self) -> str:
        if len(self.terms) == 1:
            return _print(self.terms[0], 0)
        return " & ".join(_print(t, _AND + 1) for t in self.terms)

    def _of(self, kind: type[_T]) -> tuple[_T, ...]:
        return tuple(t for t in self.terms if isinstance(t, kind))

    @property
    def constraints(self) -> tuple[Constraint, ...]:
        """The distributional constraints, a restore's expanded in place (λ is fitted for
        these, in this order)."""
        return tuple(c for t in self.terms
                     for c in (t.constraints if isinstance(t, Restore) else (t,))
                     if isinstance(c, Constraint))

    @property
    def controls(self) -> tuple[Control, ...]:
        return self._of(Control)

    @property
    def keeps(self) -> tuple[Keep, ...]:
        return self._of(Keep)

    @property
    def pointwise(self) -> tuple[Term, ...]:
        """The pointwise energy terms (clip, predicates and their not/and/or/weights)."""
        return tuple(t for t in self.terms if not isinstance(t, STAGE_LEVEL))

    @property
    def predicates(self) -> tuple[Predicate, ...]:
        """Every predicate used by a pointwise term."""
        return tuple(p for t in self.pointwise for p in t.predicates)

    @property
    def clips(self) -> tuple[Clip, ...]:
        return tuple(c for t in self.pointwise for c in t.walk() if isinstance(c, Clip))

    @property
    def sliders(self) -> tuple[Slider, ...]:
        """The stage's sliders, one per name, first use first."""
        return _unique_sliders(s for t in self.terms for s in sliders_of(t))

    @property
    def is_conditional(self) -> bool:
        return bool(self.controls) or bool(self.sliders)

    def to_dict(self) -> dict[str, Any]:
        return {"terms": [t.to_dict() for t in self.terms]}


@dataclass(frozen=True)
class Program:
    """A checked (``catalog`` set) or unchecked (``catalog=None``) sequence of stages.

    ``source`` (the text it was compiled from), ``catalog_obj`` (the Catalog it was checked
    against) and ``generator`` (the name given to ``compile``) are kept but never compared.
    """

    stages: tuple[Stage, ...]
    catalog: str | None = None
    source: str | None = field(default=None, compare=False, repr=False, kw_only=True)
    catalog_obj: Catalog | None = field(default=None, compare=False, repr=False, kw_only=True)
    generator: str | None = field(default=None, compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))

    # -- reading
    def __str__(self) -> str:
        return " | then ".join(str(s) for s in self.stages)

    def __repr__(self) -> str:
        return f"Program({str(self)!r}, catalog={self.catalog!r})"

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def __getitem__(self, index: int) -> Stage:
        return self.stages[index]

    @property
    def is_checked(self) -> bool:
        return self.catalog is not None

    @property
    def sliders(self) -> tuple[Slider, ...]:
        """Every slider of the program, one per name, first use first."""
        return _unique_sliders(s for stage in self.stages for s in stage.sliders)

    def stage_sliders(self, index: int) -> tuple[Slider, ...]:
        """The sliders stage ``index`` (from 0) takes as its flow's context: every slider of
        that stage and of the stages before it, one per name, first use first. A stage after
        a slider stage samples a base that moves with the slider, so the slider is its
        context too."""
        return _unique_sliders(s for stage in self.stages[:index + 1] for s in stage.sliders)

    @property
    def attributes(self) -> tuple[str, ...]:
        """Every attribute the program names (predicates and constraints), first use first."""
        return tuple(dict.fromkeys(attr for stage in self.stages for term in stage.terms
                                   for attr in attributes_of(term)))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able description (canonical text, catalog, stages, backing models)."""
        from energyql.lang.render import program_dict

        return program_dict(self)

    def tree(self) -> Group:
        """Return a rich renderable tree of stages and terms with their backing models."""
        from energyql.lang.render import program_tree

        return program_tree(self)

    # -- checking and composing (see energyql.lang.compose)
    def checked(self, catalog: Catalog | str) -> Program:
        """Return this program resolved against ``catalog`` (a Catalog, catalog or generator
        name); raises the same errors as :func:`energyql.compile`."""
        from energyql.lang.check import check_program, resolve_catalog

        cat, where = resolve_catalog(catalog)
        return check_program(self, cat, where)

    def at(self, values: Mapping[str, float] | None = None, /, **named: float) -> Program:
        """Return this program with its sliders set (``program.at(p=0.3)``); sliders not
        given sit at the middle of their ranges. A value outside a range is a UsageError."""
        from energyql.lang.settings import program_at

        return program_at(self, {**(values or {}), **named})

    def then(self, *others: Program | Term) -> Program:
        """Return this program followed by the stages of ``others``."""
        from energyql.lang.compose import then

        return then(self, *others)

    def or_(self, other: Program | Term) -> Program:
        """Return the soft OR of two single-stage pointwise programs."""
        from energyql.lang.compose import either

        return either(self, other)

    def __and__(self, other: Program | Term) -> Program:
        from energyql.lang.compose import conjoin

        return conjoin(self, other)

    def __rand__(self, other: Program | Term) -> Program:
        from energyql.lang.compose import conjoin

        return conjoin(other, self)

    def __or__(self, other: Program | Term) -> Program:
        return self.then(other)

    def __ror__(self, other: Program | Term) -> Program:
        from energyql.lang.compose import then

        return then(other, self)

    def __mul__(self, weight: float | Slider) -> Program:
        from energyql.lang.compose import scale

        if isinstance(weight, Slider):
            return scale(self, weight)
        if isinstance(weight, bool) or not isinstance(weight, Real):
            return NotImplemented
        return scale(self, float(weight))

    __rmul__ = __mul__

    def __invert__(self) -> Program:
        from energyql.lang.compose import negate

        return negate(self)


# --- questions about a term (the one pass of each) ------------------------------------------


class _AttributesNamed(TermVisitor[tuple[str, ...]]):
    """The attributes one node names itself (not those of its children)."""

    def on_predicate(self, term: Predicate) -> tuple[str, ...]:
        return (term.attr,)

    def on_constraint(self, term: Constraint) -> tuple[str, ...]:
        return term.attrs

    def on_dist_spec(self, term: DistSpec) -> tuple[str, ...]:
        return term.attrs

    def on_term(self, term: Term) -> tuple[str, ...]:
        return ()


_ATTRIBUTES_NAMED = _AttributesNamed()


def attributes_of(term: Term) -> tuple[str, ...]:
    """Return the attributes a term mentions anywhere below it (predicates, constraints, a
    restore's constraints), first use first."""
    return tuple(dict.fromkeys(attr for node in term.walk()
                               for attr in _ATTRIBUTES_NAMED.visit(node)))


def sliders_of(term: Term) -> tuple[Slider, ...]:
    """Return every slider written in ``term`` (weights and dist entries), in order, repeats
    included."""
    found: list[Slider] = []
    for node in term.walk():
        if isinstance(node, Scale) and node.slider is not None:
            found.append(node.slider)
        elif isinstance(node, Constraint):
            found.extend(slider for _, slider in node.sliders)
        elif isinstance(node, DistSpec):
            found.extend(p for _, p in node.entries if isinstance(p, Slider))
    return tuple(found)


def _unique_sliders(sliders: Iterable[Slider]) -> tuple[Slider, ...]:
    """The first slider of each name (validation makes every use of a name agree)."""
    first: dict[str, Slider] = {}
    for slider in sliders:
        first.setdefault(slider.name, slider)
    return tuple(first.values())


class _IsProbability(TermVisitor[bool]):
    """Whether a term denotes a probability: a predicate (or an unchecked bare name), and
    ``not``/``and``/``or`` of probabilities only (``not clip(...)`` is none)."""

    def on_predicate(self, term: Predicate) -> bool:
        return True

    def on_name(self, term: Name) -> bool:
        return True

    def on_not(self, term: Not) -> bool:
        return self.visit(term.term)

    def on_flat(self, term: _Flat) -> bool:
        return all(self.visit(t) for t in term.terms)

    def on_term(self, term: Term) -> bool:
        return False


_IS_PROBABILITY = _IsProbability()


def is_probability(term: Term) -> bool:
    """Return whether a term denotes a probability (predicates and their not/and/or)."""
    return _IS_PROBABILITY.visit(term)


# --- canonical text -----------------------------------------------------------------------------

_OR, _AND, _SCALE, _NOT, _ATOM = 1, 2, 3, 4, 5


def format_number(value: float) -> str:
    """Print a number so that it parses back to the same float."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def quote(text: str) -> str:
    """Return ``text`` as a double-quoted string literal of the language."""
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\t", "\\t").replace("\r", "\\r"))
    return f'"{escaped}"'


def to_source(term: Term) -> str:
    """Return the canonical source of one term."""
    return _print(term, 0)


def _print(term: Term, context: int) -> str:
    text, level = _PRINTER.visit(term)
    return f"({text})" if level < context else text


class _Printer(TermVisitor[tuple[str, int]]):
    """Canonical text of one node and its binding level (parentheses go where it is lower)."""

    def on_or(self, term: Or) -> tuple[str, int]:
        return " or ".join(_print(t, _OR + 1) for t in term.terms), _OR

    def on_and(self, term: And) -> tuple[str, int]:
        return " & ".join(_print(t, _AND + 1) for t in term.terms), _AND

    def on_scale(self, term: Scale) -> tuple[str, int]:
        factors = [] if term.weight == 1 and term.slider else [format_number(term.weight)]
        if term.slider is not None:
            factors.append(f"({term.slider})")
        return f"{' * '.join(factors)} * {_print(term.term, _NOT)}", _SCALE

    def on_not(self, term: Not) -> tuple[str, int]:
        return f"not {_print(term.term, _NOT)}", _NOT

    def on_clip(self, term: Clip) -> tuple[str, int]:
        options = "".join(
            f", {key}={value}" for key, value in (
                ("model", None if term.model is None else quote(term.model)),
                ("augment", None if term.augment is None else format_number(term.augment)),
            ) if value is not None)
        return f"clip({quote(term.text)}{options})", _ATOM

    def on_predicate(self, term: Predicate) -> tuple[str, int]:
        return f"{term.attr} == {term.value}", _ATOM

    def on_name(self, term: Name) -> tuple[str, int]:
        return term.name, _ATOM

    def on_constraint(self, term: Constraint) -> tuple[str, int]:
        attrs = " x ".join(term.attrs)
        if term.rule.target != GIVEN_TARGET:  # a deferred one prints as a label only
            return f"{term.kind}({attrs})", _ATOM
        if len(term.values) != len(term.attrs):
            raise CompositionError("cannot print an unchecked dist constraint without its values")
        sliders = dict(term.sliders)
        entries = [f"{' x '.join(cell)}={sliders[i] if i in sliders else format_number(p)}"
                   for i, (cell, p) in enumerate(zip(term.cells, term.target))
                   if i in sliders or (p > 0 and i not in term.free)]
        return f"dist({', '.join([attrs, *entries])})", _ATOM

    def on_dist_spec(self, term: DistSpec) -> tuple[str, int]:
        entries = [f"{' x '.join(key)}="
                   f"{p if isinstance(p, Slider) else format_number(p)}" for key, p in term.entries]
        return f"dist({', '.join([' x '.join(term.attrs), *entries])})", _ATOM

    def on_control(self, term: Control) -> tuple[str, int]:
        params = ", ".join(f"{p.name} in {format_number(p.low)}..{format_number(p.high)}"
                           for p in term.params)
        return f"{term.name}({params})", _ATOM

    def on_keep(self, term: Keep) -> tuple[str, int]:
        return f"keep({term.what})", _ATOM

    def on_restore(self, term: Restore) -> tuple[str, int]:
        return f"debias({term.name})", _ATOM

    def fallback(self, term: object, *args: object, **kwargs: object) -> tuple[str, int]:
        raise CompositionError(f"cannot print a {type(term).__name__} term")


_PRINTER = _Printer()


# --- weights ------------------------------------------------------------------------------------


def scaled(weight: float, term: Term, origin: Origin | None = None) -> Term:
    """Return ``weight * term`` (weights multiply out; a weight of 1 vanishes)."""
    if not (math.isfinite(weight) and weight > 0):
        raise error_at(ArgumentError, f"weights must be positive numbers, got {weight:g}",
                       origin, "to push away from a predicate use 'not', e.g. not smiling")
    if isinstance(term, Scale):
        return scaled(weight * term.weight, term.term, origin)
    return term if weight == 1 else Scale(weight, term, origin=origin)
