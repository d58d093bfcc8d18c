"""Small helpers for expression errors: raising at a node's origin, "did you mean" hints."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from energyql.errors import ExpressionError, did_you_mean

if TYPE_CHECKING:  # graph imports this module; the origin is only read here
    from energyql.lang.graph import Origin


def error_at(kind: type[ExpressionError], message: str, origin: Origin | None,
             hint: str | None = None) -> ExpressionError:
    """Return an error of ``kind`` pointing at ``origin`` (when known)."""
    if origin is None:
        return kind(message, hint=hint)
    if origin.label:
        message = f"{message} (in {origin.label})"
    return kind(message, source=origin.source, span=origin.span, hint=hint)


def suggest(name: str, candidates: Iterable[str], listing: str | None = None,
            limit: int = 12) -> str:
    """Return a hint: "did you mean 'x'? " followed by ``listing: a, b, c, ...``."""
    return did_you_mean(name, candidates, listing=listing, limit=limit)
