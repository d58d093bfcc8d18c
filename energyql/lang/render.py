"""Views of a program: a rich tree for people and a JSON-able dict for tools.

Both name the control model behind each term (CLIP model, attribute classifier, pose
regressor, identity network), looked up in the program's catalog.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.text import Text
from rich.tree import Tree

from energyql.catalog import CATALOGS
from energyql.lang.graph import (
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
    Predicate,
    Program,
    Restore,
    Scale,
    Slider,
    Term,
    format_number,
    quote,
    to_source,
)
from energyql.lang.visit import TermVisitor

if TYPE_CHECKING:
    from energyql.catalog import Catalog

_UNCHECKED = "unchecked"


def _catalog(program: Program) -> Catalog | None:
    if program.catalog_obj is not None:
        return program.catalog_obj
    return CATALOGS.get(program.catalog) if program.catalog else None


def backing(term: Term, catalog: Catalog | None) -> str | None:
    """Return the control model behind ``term`` (None for operators)."""
    return _Backing(catalog).visit(term)


class _Backing(TermVisitor[str | None]):
    """The model that judges each kind of term, as the catalog names it."""

    def __init__(self, catalog: Catalog | None):
        self.catalog = catalog

    def on_clip(self, term: Clip) -> str | None:
        if term.model:
            return term.model
        if self.catalog is None:
            return "CLIP (catalog default)"
        return self.catalog.clip_model or "CLIP"

    def on_predicate(self, term: Predicate) -> str | None:
        if self.catalog is None:
            return _UNCHECKED
        attribute = self.catalog.attribute(term.attr)
        return attribute.model if attribute else None

    def on_name(self, term: Name) -> str | None:
        return _UNCHECKED if self.catalog is None else None

    def on_dist_spec(self, term: DistSpec) -> str | None:
        return _UNCHECKED if self.catalog is None else None

    def _judging(self, attrs: tuple[str, ...]) -> str | None:
        if self.catalog is None:
            return _UNCHECKED
        attributes = (self.catalog.attribute(a) for a in attrs)
        models = [a.model for a in attributes if a]
        return ", ".join(dict.fromkeys(models)) or None

    def on_constraint(self, term: Constraint) -> str | None:
        return self._judging(term.attrs)

    def on_restore(self, term: Restore) -> str | None:
        return None if self.catalog is None else \
            self._judging(tuple(a for c in term.constraints for a in c.attrs))

    def on_control(self, term: Control) -> str | None:
        if self.catalog is None:
            return _UNCHECKED
        control = self.catalog.control(term.name)
        return control.model if control else None

    def on_keep(self, term: Keep) -> str | None:
        return _UNCHECKED if self.catalog is None else self.catalog.keepable(term.what)

    def on_term(self, term: Term) -> str | None:
        return None  # operators (not, and, or, weights) have no model of their own


# --- dict ---------------------------------------------------------------------------------------


def _term_dict(term: Term, catalog: Catalog | None) -> dict[str, Any]:
    data = term.to_dict()
    for key in ("term", "terms"):
        if key in data:
            children = term.children
            data[key] = ([_term_dict(c, catalog) for c in children] if key == "terms"
                         else _term_dict(children[0], catalog))
    model = backing(term, catalog)
    if model is not None:
        data["backed_by"] = model
    if isinstance(term, Constraint):
        data["target_is"] = term.rule.label  # what its target is, from the kinds table
    data["canonical"] = to_source(term)
    return data


def slider_uses(program: Program) -> dict[str, list[str]]:
    """What each slider moves, in words, by slider name (first use first)."""
    uses: dict[str, list[str]] = {s.name: [] for s in program.sliders}
    for stage in program.stages:
        for top in stage.terms:
            for node in top.walk():
                if isinstance(node, Scale) and node.slider is not None:
                    uses[node.slider.name].append(f"the weight of {to_source(node.term)}")
                elif isinstance(node, Constraint):
                    for cell, slider in node.sliders:
                        value = " x ".join(node.cells[cell]) if node.values else str(cell)
                        uses[slider.name].append(
                            f"P({' x '.join(node.attrs)} = {value}) in {to_source(node)}")
                elif isinstance(node, DistSpec):
                    for key, amount in node.entries:
                        if isinstance(amount, Slider):
                            uses[amount.name].append(f"P({' x '.join(key)}) in {to_source(node)}")
    return uses


def program_dict(program: Program) -> dict[str, Any]:
    catalog = _catalog(program)
    uses = slider_uses(program)
    return {
        "canonical": str(program),
        "catalog": program.catalog,
        "generator": program.generator,
        "checked": program.catalog is not None,
        "stages": [{"index": i, "terms": [_term_dict(t, catalog) for t in stage.terms],
                    "context_sliders": [s.name for s in program.stage_sliders(i - 1)]}
                   for i, stage in enumerate(program.stages, 1)],
        "sliders": [{**s.to_dict(), "moves": uses[s.name]} for s in program.sliders],
    }


# --- rich tree ----------------------------------------------------------------------------------


def _label(term: Term, catalog: Catalog | None) -> Text:
    text = _LABELS.visit(term)
    # A restore's terms show no model: their lines are long, and the judge is the attributes'.
    quiet = isinstance(term, Restore) or (isinstance(term, Constraint) and term.deferred)
    model = None if quiet else backing(term, catalog)
    if model:
        text.append(f"  [{model}]", style="dim italic")
    return text


class _Labels(TermVisitor[Text]):
    """The tree label of each kind of term, without its backing model."""

    def on_clip(self, term: Clip) -> Text:
        text = Text().append("clip ", style="bold cyan").append(quote(term.text))
        if term.augment is not None:
            text.append(f"  augment={term.augment}", style="dim")
        return text

    def on_predicate(self, term: Predicate) -> Text:
        return Text().append("predicate ", style="bold green").append(
            f"{term.attr} == {term.value}")

    def on_name(self, term: Name) -> Text:
        return Text().append("name ", style="bold green").append(term.name)

    def on_not(self, term: Not) -> Text:
        return Text().append("not", style="bold magenta").append("  −log(1 − p)", style="dim")

    def on_and(self, term: And) -> Text:
        return Text().append("and", style="bold magenta").append("  energies add", style="dim")

    def on_or(self, term: Or) -> Text:
        return Text().append("or", style="bold magenta").append("  soft OR", style="dim")

    def on_scale(self, term: Scale) -> Text:
        factors = [format_number(term.weight)] if term.weight != 1 or not term.slider else []
        if term.slider is not None:
            factors.append(f"slider {term.slider}")
        return Text().append(f"weight {' × '.join(factors)}", style="bold yellow")

    def on_constraint(self, term: Constraint) -> Text:
        text = Text().append(f"{term.kind} ", style="bold blue").append(" x ".join(term.attrs))
        if term.deferred:
            given = " & ".join(to_source(t) for t in term.given) or "nothing asked"
            return text.append(f"  p0({' x '.join(term.attrs)} | {given})", style="dim")
        cells = len(term.target)
        if cells:
            text.append(f"  {cells} cells", style="dim")
        if term.rule.target == GIVEN_TARGET and term.values:
            sliders = {i: str(s) for i, s in term.sliders}
            shown = ", ".join(
                f"{' x '.join(c)}={sliders.get(i, f'{p:.3g}')}"
                + (" (rest)" if i in term.free else "")
                for i, (c, p) in enumerate(zip(term.cells, term.target)) if p > 0 or i in sliders)
            text.append(f"  {shown}" if len(shown) < 120 else f"  {shown[:117]}...", style="dim")
        return text

    def on_dist_spec(self, term: DistSpec) -> Text:
        return Text().append("dist ", style="bold blue").append(" x ".join(term.attrs))

    def on_control(self, term: Control) -> Text:
        return Text().append(f"control {term.name} ", style="bold blue").append(", ".join(
            f"{p.name} in {format_number(p.low)}..{format_number(p.high)}" for p in term.params))

    def on_keep(self, term: Keep) -> Text:
        return Text().append("keep ", style="bold blue").append(term.what)

    def on_restore(self, term: Restore) -> Text:
        return Text().append("debias ", style="bold blue").append(
            f"{term.name} -> {', '.join(term.restored)}")

    def on_term(self, term: Term) -> Text:
        return Text(type(term).__name__)


_LABELS = _Labels()


def resolution_lines(term: Restore) -> list[str]:
    """Return why ``debias(clip_bias)`` resolved as it did, one reason a line."""
    why = term.resolution
    lines = [f'"{word}" in clip({quote(prompt)}) -> {attr} == {value}'
             for prompt, word, attr, value in why.matched]
    for verb, reasons in (("asked for by", why.asked), ("constrained by", why.constrained)):
        grouped: dict[str, list[str]] = {}
        for attr, reason in reasons:
            grouped.setdefault(reason, []).append(attr)
        lines += [f"{', '.join(attrs)}: {verb} {reason}"
                  for reason, attrs in grouped.items()]
    lines += [f"re-asserts {to_source(c)} so that it keeps holding" for c in term.reasserts]
    lines += [f"does not re-assert {text}: {reason}" for text, reason in why.dropped]
    if not term.given:
        lines.append("nothing was asked before it: the targets are the generator's own")
    return lines


def _add(parent: Tree, term: Term, catalog: Catalog | None) -> None:
    # Iterative, so that deep programs built in Python render without recursion limits.
    stack = [(parent, term)]
    while stack:
        node, current = stack.pop()
        branch = node.add(_label(current, catalog))
        if isinstance(current, Restore):
            why = branch.add(Text("why (what the stages before it ask for or constrain is "
                                  "left out)", style="bold"))
            for line in resolution_lines(current):
                why.add(Text(line, style="dim"))
        stack.extend((branch, child) for child in reversed(current.children))


def program_tree(program: Program) -> Group:
    catalog = _catalog(program)
    # The canonical text goes above the tree: tree labels are cropped to the width, text is not.
    header = Text()
    header.append("program ", style="bold").append(str(program))
    where = program.generator or program.catalog
    summary = Text(f"{len(program.stages)} stage(s) · ", style="bold")
    summary.append(f"catalog {program.catalog} ({where})" if program.catalog else
                   "names unchecked (pass a generator to check them)", style="dim")
    root = Tree(summary)
    for index, stage in enumerate(program.stages, 1):
        kinds = []
        if stage.pointwise:
            kinds.append(f"{len(stage.pointwise)} pointwise")
        if stage.constraints or any(isinstance(t, DistSpec) for t in stage.terms):
            kinds.append(f"{len(stage.constraints) + len(stage._of(DistSpec))} constraint(s)")
        if stage.controls:
            kinds.append("conditional")
        if stage.sliders:
            kinds.append(f"{len(stage.sliders)} slider(s)")
        inherited = [s.name for s in program.stage_sliders(index - 1) if s not in stage.sliders]
        if inherited:
            # Its base moves with an earlier stage's slider, so the stage's flow takes it too.
            kinds.append(f"follows slider(s) {', '.join(inherited)}")
        branch = root.add(Text.assemble((f"stage {index}", "bold"), (f"  {', '.join(kinds)}",
                                                                      "dim")))
        for term in stage.terms:
            _add(branch, term, catalog)
    uses = slider_uses(program)
    if uses:
        sliders = root.add(Text("sliders (set at sample time: --set NAME=VALUE)", style="bold"))
        for slider in program.sliders:
            branch = sliders.add(Text.assemble((str(slider), "bold yellow")))
            for use in uses[slider.name]:
                branch.add(Text(f"moves {use}", style="dim"))
    return Group(header, root)
