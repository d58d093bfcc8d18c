"""Small helpers for expression errors: raising at a node's origin, "did you mean" hints."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from energyql.errors import ExpressionError
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
    pool = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    if listing is not None:
        shown = ", ".join(pool[:limit]) + (", ..." if len(pool) > limit else "")
        hint += f"{listing}: {shown}" if pool else f"{listing}: none"
    return hint.strip()
