"""One dispatcher for passes over the term tree.

A pass is a subclass of :class:`TermVisitor` with one ``on_<kind>`` method per term class it
handles (``on_predicate``, ``on_and``, ``on_dist_spec``, ...). ``visit`` looks the method up
along the term's class hierarchy, so ``on_term`` (or ``fallback``) catches whatever a pass does
not name; a new term type means one method in each pass that cares about it.
"""

from __future__ import annotations

import re
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def method_name(cls: type) -> str:
    """Return the visitor method for a class: ``DistSpec`` -> ``on_dist_spec``."""
    return "on_" + _CAMEL.sub("_", cls.__name__.lstrip("_")).lower()


class TermVisitor(Generic[T]):
    """Calls ``self.on_<kind>(term, *args)`` for a term; ``fallback`` when no method matches."""

    def visit(self, term: Any, *args: Any, **kwargs: Any) -> T:
        for cls in type(term).__mro__:
            method = getattr(self, method_name(cls), None)
            if method is not None:
                return method(term, *args, **kwargs)  # type: ignore[no-any-return]
        return self.fallback(term, *args, **kwargs)

    def fallback(self, term: Any, *args: Any, **kwargs: Any) -> T:
        raise TypeError(f"{type(self).__name__} has no rule for {type(term).__name__} terms")
