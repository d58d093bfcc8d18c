"""The error family of energyql: every failure a user can cause is an ``EnergyQLError``.

Expression errors also subclass ``ValueError`` and carry the source and a span, so that their
message shows the offending line with a caret under the text and a ``hint:`` line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A half-open character range ``[start, end)`` in an expression's source."""

    start: int
    end: int

    def line_and_column(self, source: str) -> tuple[int, int]:
        """Return the 1-based line and column of ``start`` in ``source``."""
        line = source.count("\n", 0, self.start) + 1
        column = self.start - (source.rfind("\n", 0, self.start) + 1) + 1
        return line, column


def shown(char: str) -> str:
    """Return ``char`` as it is safe to print: itself, or an escape for control characters."""
    if char.isprintable() or char == " ":
        return char
    return {"\t": "\\t", "\r": "\\r"}.get(char) or ascii(char)[1:-1]


def escape_controls(text: str) -> str:
    """Return ``text`` with control characters and terminal escapes shown escaped (lines kept)."""
    return "\n".join("".join(shown(c) for c in line) for line in text.split("\n"))


def caret_excerpt(source: str, span: Span) -> str:
    """Return the source line holding ``span`` with carets under the spanned text.

    Control characters (an ANSI escape, a tab, a NUL) are shown escaped, so the terminal
    prints the text the user typed rather than obeying it; the carets stay under the span.
    """
    start = max(0, min(span.start, len(source)))
    line_start = source.rfind("\n", 0, start) + 1
    line_end = source.find("\n", start)
    if line_end == -1:
        line_end = len(source)
    before = "".join(shown(c) for c in source[line_start:start])
    inside = "".join(shown(c) for c in source[start:min(span.end, line_end)])
    after = "".join(shown(c) for c in source[min(span.end, line_end):line_end])
    width = max(1, len(inside))
    return f"  {before}{inside}{after}\n  {' ' * len(before)}{'^' * width}"


class EnergyQLError(Exception):
    """Root of every error energyql raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = self.message + (f"\nhint: {self.hint}" if self.hint else "")
        return escape_controls(text)


class ExpressionError(EnergyQLError, ValueError):
    """An error in an expression's text; shows the line and a caret under ``span``."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        span: Span | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, hint=hint)
        self.source = source
        self.span = span

    def __str__(self) -> str:
        parts = [escape_controls(self.message)]
        if self.source is not None and self.span is not None:
            parts.append(caret_excerpt(self.source, self.span))
        if self.hint:
            parts.append(escape_controls(f"hint: {self.hint}"))
        return "\n".join(parts)


class ParseError(ExpressionError):
    """The text is not a well-formed expression."""


class NameResolutionError(ExpressionError):
    """A name (attribute, value, control, binding) is not known where it is used."""


class ArgumentError(ExpressionError):
    """A call has the wrong number, kind or value of arguments."""


class CompositionError(ExpressionError):
    """Terms are combined in a way that has no meaning (e.g. ``not uniform(...)``)."""


class UsageError(EnergyQLError, ValueError):
    """A command or function was called with an option value it does not take."""


class UnknownGeneratorError(EnergyQLError, ValueError):
    """A generator name that is neither registered nor a usable path."""


class WeightsMissingError(EnergyQLError):
    """Model weights are not on disk and cannot be fetched; says where to put them."""


class TrainingError(EnergyQLError):
    """Training cannot go on (e.g. the loss keeps being non-finite)."""


class EvaluationError(EnergyQLError):
    """A run trained and saved its artifact, but measuring it failed."""


class ArtifactError(EnergyQLError):
    """A saved artifact is missing, incomplete or does not match its generator."""


class SamplerError(EnergyQLError):
    """A sampler cannot run with the arguments given."""


class OutputError(EnergyQLError):
    """A file cannot be written where it was asked for (a read-only folder, a device node)."""


class CheckpointError(EnergyQLError):
    """A weights or checkpoint file cannot be read, or does not hold what it should."""


class UnsafePickleError(CheckpointError):
    """A pickle asks for code outside the allow-list; it is refused, never executed."""


class DigestMismatchError(WeightsMissingError):
    """A downloaded or cached file does not have the digest it is registered with."""


def did_you_mean(value: str, options: Iterable[str], *, listing: str | None = None,
                 limit: int = 12) -> str:
    """Return a hint: "did you mean 'x'? " followed by ``listing: a, b, c, ...`` when asked."""
    pool = list(dict.fromkeys(options))
    close = difflib.get_close_matches(value, pool, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    if listing is not None:
        shown = ", ".join(pool[:limit]) + (", ..." if len(pool) > limit else "")
        hint += f"{listing}: {shown}" if pool else f"{listing}: none"
    return hint.strip()


def check_choice(value: str, options: Iterable[str], *, what: str,
                 error: type[EnergyQLError] = UsageError) -> str:
    """Return ``value`` if it is one of ``options``; else raise ``error`` with a hint.

    The one place "not one of the allowed values" is written: the message names ``what`` and
    quotes the value, the hint suggests the closest option and lists them all.

    Example:
        ``check_choice("flow+sri", ["flow", "flow+sir"], what="sampler")`` raises
        ``UsageError("unknown sampler 'flow+sri'")`` with the hint
        ``did you mean 'flow+sir'? samplers: flow, flow+sir``.
    """
    pool = list(options)
    if value in pool:
        return value
    raise error(f"unknown {what} '{value}'", hint=did_you_mean(value, pool, listing=f"{what}s",
                                                               limit=len(pool)))
