"""The term visitor: dispatch along the class hierarchy, one fallback."""

import pytest

from energyql.errors import UsageError, check_choice
from energyql.lang import graph as g
from energyql.lang.visit import TermVisitor, method_name


def test_method_names_are_snake_case():
    assert method_name(g.DistSpec) == "on_dist_spec"
    assert method_name(g.Predicate) == "on_predicate"
    assert method_name(g.And) == "on_and"


class _Kinds(TermVisitor[str]):
    def on_predicate(self, term):
        return "predicate"

    def on_term(self, term):
        return "other"


def test_dispatch_prefers_the_most_specific_method():
    red = g.Predicate("color", "red")
    assert _Kinds().visit(red) == "predicate"
    assert _Kinds().visit(g.Not(red)) == "other"


def test_fallback_names_the_pass_and_the_term():
    class Nothing(TermVisitor[None]):
        pass

    with pytest.raises(TypeError, match="Nothing has no rule for Predicate"):
        Nothing().visit(g.Predicate("color", "red"))


def test_check_choice_suggests_and_lists():
    assert check_choice("flow", ["flow", "flow+sir"], what="sampler") == "flow"
    with pytest.raises(UsageError) as caught:
        check_choice("flow+sri", ["flow", "flow+sir"], what="sampler")
    assert caught.value.message == "unknown sampler 'flow+sri'"
    assert "did you mean 'flow+sir'?" in caught.value.hint


def test_passes_over_the_graph_dispatch_along_the_hierarchy_and_refuse_unknown_terms():
    from dataclasses import dataclass

    from energyql.errors import CompositionError
    from energyql.lang.render import backing

    @dataclass(frozen=True)
    class Shouted(g.Predicate):
        """A predicate subclass: every pass treats it as a predicate without a new method."""

    @dataclass(frozen=True)
    class Stranger(g.Term):
        """A term type no pass knows."""

    shouted = Shouted("color", "red")
    assert str(g.Not(shouted)) == "not color == red"
    assert backing(shouted, None) == "unchecked"
    with pytest.raises(CompositionError, match="cannot print a Stranger term"):
        str(g.And((shouted, Stranger())))
    with pytest.raises(CompositionError, match="cannot check a Stranger term"):
        g.Program((g.Stage((Stranger(),)),)).checked("shapes")
