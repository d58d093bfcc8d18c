"""The typer app and the error boundary shared by every command.

Commands print errors (never tracebacks) to stderr: exit 2 for an expression or usage error,
1 for a runtime failure; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from energyql.errors import (
    EnergyQLError, ExpressionError, UnknownGeneratorError, UsageError, check_choice,
)

app = typer.Typer(
    name="energyql",
    help="Distributional control of pre-trained image generators (PromptGen) from one expression.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)

# Options shared by `run` and `eval`: which judges stand in for the world's defaults.
ClipOption = Annotated[Optional[str], typer.Option(
    "--clip", help="CLIP spec replacing the world's default (NAME:TAG, NAME:PATH, ...).")]
FaceAttributesOption = Annotated[Optional[str], typer.Option(
    "--face-attributes", help="Face attribute model: clip, fairface or fairface:PATH.")]
ThreadsOption = Annotated[Optional[int], typer.Option(
    help="torch CPU threads (default: torch's own choice).")]


def set_threads(threads: int | None) -> None:
    """Set torch's CPU threads when asked (torch is imported only then)."""
    if threads:
        import torch

        torch.set_num_threads(threads)

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    _state["debug"] = debug


def fail(error: BaseException) -> "typer.Exit":
    """Print ``error`` to stderr and return the Exit to raise (2: expression, 1: runtime)."""
    if _state["debug"]:
        import traceback

        traceback.print_exception(error, file=sys.stderr)
    stderr.print(Text.assemble(("error: ", "bold red"), str(error)))
    usage = isinstance(error, (ExpressionError, UnknownGeneratorError, UsageError))
    return typer.Exit(code=2 if usage else 1)


def guarded(function):
    """Run ``function``; turn an EnergyQLError into a clean message and exit code."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except EnergyQLError as error:
            raise fail(error) from None

    return wrapper


def check_sampler(name: str) -> str:
    """Refuse an unknown sampler name before anything is loaded (a usage error, exit 2)."""
    from energyql.baselines import SAMPLERS

    return check_choice(name, SAMPLERS, what="sampler")


@contextlib.contextmanager
def environment(**variables: str | None):
    """Set environment variables (those not None) for the duration of a command."""
    saved = {name: os.environ.get(name) for name in variables}
    try:
        for name, value in variables.items():
            if value is not None:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main() -> None:
    import energyql.cli  # noqa: F401  (registers every command on ``app``)

    failed = True
    try:
        app()
        failed = False
    except SystemExit as exit_:
        failed = exit_.code not in (0, None)
        raise
    finally:
        # Under torchrun, leave the process group before the interpreter exits (see
        # energyql.distributed.shutdown); a no-op otherwise, and torch is not imported for it.
        if "torch.distributed" in sys.modules:
            from energyql.distributed import shutdown

            shutdown(wait_for_peers=not failed)
