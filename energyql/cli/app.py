"""The typer app and the error boundary shared by every command.

Commands print errors (never tracebacks) to stderr: exit 2 for an expression or usage error,
1 for a runtime failure; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from energyql.errors import (
    EnergyQLError,
    ExpressionError,
    UnknownGeneratorError,
    UsageError,
    check_choice,
)
from energyql.options import (  # bounds shared with energyql.train
    COUPLING_CHOICES,
    MAX_BATCH,
    MAX_LOSS_WEIGHT,
    MAX_SAMPLES,
    MAX_STEPS,
    MAX_TEMPER,
    MAX_THREADS,
    MIN_REPORT_SAMPLES,
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

# --- option values, checked by the CLI before any work (a bad value exits 2) ----------------------

Number = TypeVar("Number", int, float)

#: Seeds are 64-bit (torch.Generator.manual_seed takes at most 2**64 - 1; numpy 2**32 - 1 is
#: derived from them), so anything above 2**63 - 1 is refused instead of wrapping around.
MAX_SEED = 2**63 - 1


def _number(value: float) -> str:
    """A bound as people write it: 1,000,000 rather than 1e+06."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def in_range(low: float | None = None, high: float | None = None, *,
             low_open: bool = False) -> Callable[[Number | None], Number | None]:
    """Return an option callback that refuses values outside ``[low, high]`` and non-finite ones.

    ``low_open`` excludes ``low`` itself (``--lr 0``). None (an option left unset) passes.
    """
    if low is not None and high is not None:
        wanted = f"from {_number(low)} to {_number(high)}"
    elif low is not None:
        wanted = f"greater than {low:g}" if low_open else f"at least {low:g}"
    else:
        wanted = f"at most {high:g}"

    def check(value: Number | None) -> Number | None:
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            raise typer.BadParameter(f"must be a finite number {wanted}, got {value}")
        if low is not None and (value <= low if low_open else value < low):
            rule = f"greater than {low:g}" if low_open else f"at least {_number(low)}"
            raise typer.BadParameter(f"must be {rule}, got {value}")
        if high is not None and value > high:
            raise typer.BadParameter(f"must be at most {_number(high)}, got {value}")
        return value

    return check


_DEVICE = re.compile(r"(cpu|mps|cuda)(?::(\d+))?\Z")


def check_device(value: str) -> str:
    """Return ``value`` if it names a device present on this machine (cpu, cuda[:N], mps)."""
    match = _DEVICE.match(value)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise typer.BadParameter(f"unknown device '{value}'; use cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return value
    import torch

    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise typer.BadParameter("device 'mps' is not available on this machine; use cpu")
        return value
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise typer.BadParameter(f"device '{value}' is not available: this machine has no "
                                 "CUDA GPU; use cpu")
    if index is not None and int(index) >= count:
        raise typer.BadParameter(f"device '{value}' is not available: this machine has "
                                 f"{count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return value


def output_path(text: str) -> Path:
    """Parse an output path, refusing the empty string (it would mean the current folder)."""
    if not text.strip():
        raise typer.BadParameter("is empty; give a path to write to")
    return Path(text)


def _unusable(value: Path, error: OSError) -> typer.BadParameter:
    """The refusal of a path the system cannot even look at (a name over 255 bytes, ...)."""
    return typer.BadParameter(f"'{value}' cannot be used: {error.strerror or error}",
                              param_hint="'--out'")


def new_folder(value: Path | None) -> Path | None:
    """Refuse an artifact folder that is an existing file (before any training starts)."""
    if value is None:
        return value
    try:
        if value.exists() and not value.is_dir():
            raise typer.BadParameter(f"'{value}' is an existing file, not a folder; give a new "
                                     "or artifact folder", param_hint="'--out'")
    except OSError as error:  # ENAMETOOLONG, ELOOP
        raise _unusable(value, error) from None
    return value


def file_target(value: Path | None) -> Path | None:
    """Refuse an output file that is an existing folder, an existing file that is not a
    regular one (a device node, a FIFO) or a path in a system folder (before any work)."""
    if value is None:
        return value
    try:
        return _file_target(value)
    except OSError as error:  # ENAMETOOLONG, ELOOP: the path cannot even be looked at
        raise _unusable(value, error) from None


def _file_target(value: Path) -> Path:
    if value.is_dir():
        raise typer.BadParameter(f"'{value}' is a folder; give a file name, e.g. "
                                 f"{value / 'out'}", param_hint="'--out'")
    from energyql.io import is_system_path

    if (value.exists() or value.is_symlink()) and not value.is_file():
        raise typer.BadParameter(f"'{value}' exists and is not a regular file "
                                 "(a device, FIFO or socket); refusing to replace it",
                                 param_hint="'--out'")
    if is_system_path(value):
        raise typer.BadParameter(f"'{value}' is in a system folder; give a "
                                 "file of your own", param_hint="'--out'")
    return value


# Shared option types: run, sample and eval take the same names with the same checks.
StepsOption = Annotated[Optional[int], typer.Option(
    help=f"Training steps per stage (1 to {MAX_STEPS:,}).", callback=in_range(1, MAX_STEPS))]
BatchOption = Annotated[Optional[int], typer.Option(
    help=f"Batch size (1 to {MAX_BATCH:,}).", callback=in_range(1, MAX_BATCH))]
SamplesOption = Annotated[int, typer.Option(
    help="Samples to judge (the evaluation report).", callback=in_range(1, MAX_SAMPLES))]
ReportSamplesOption = Annotated[int, typer.Option(
    "--samples", help=f"Samples to judge in the report ({MIN_REPORT_SAMPLES} to {MAX_SAMPLES:,}).",
    callback=in_range(MIN_REPORT_SAMPLES, MAX_SAMPLES))]
TruncationOption = Annotated[Optional[float], typer.Option(
    help="Truncation psi (StyleGAN2, 0 to 2; BigGAN, up to 1).", callback=in_range(0, 2))]
CountOption = Annotated[int, typer.Option(
    "-n", help=f"Number of samples (1 to {MAX_SAMPLES:,}).", callback=in_range(1, MAX_SAMPLES))]
SeedOption = Annotated[int, typer.Option(
    help="Random seed, 0 to 2**63-1 (CPU runs are deterministic).", callback=in_range(0, MAX_SEED))]
LearningRateOption = Annotated[Optional[float], typer.Option(
    help="Learning rate (AdamW).", callback=in_range(0, low_open=True))]
WarmStartOption = Annotated[Optional[int], typer.Option(
    help="Base samples judged for the mass-covering start (0: none).",
    callback=in_range(0, MAX_SAMPLES))]
MomentSamplesOption = Annotated[Optional[int], typer.Option(
    help="Base samples judged for each λ fit before training (a slider stage judges 4 times "
         "as many for its λ grid).", callback=in_range(1, MAX_SAMPLES))]
ForwardWeightOption = Annotated[Optional[float], typer.Option(
    help="Weight of the self-normalised forward-KL term (0: reverse KL only).",
    callback=in_range(0, MAX_LOSS_WEIGHT))]
ScoreShareOption = Annotated[Optional[float], typer.Option(
    help="Share (0 to 1) of the score-function estimator in the gradient of classifier terms "
         "(learns from energy values where their slope vanishes; the target is unchanged).",
    callback=in_range(0, 1))]
ChainWeightOption = Annotated[Optional[float], typer.Option(
    help="Weight of the score-climbing term: persistent chains of exact Metropolis-Hastings "
         "steps pull the flow towards every part of the target they found (0: off).",
    callback=in_range(0, MAX_LOSS_WEIGHT))]
def _one_of(value: str | None, choices: tuple[str, ...]) -> str | None:
    if value is not None and value not in choices:
        raise typer.BadParameter(f"'{value[:40]}' is not one of {', '.join(choices)}")
    return value


ReplayWeightOption = Annotated[Optional[float], typer.Option(
    help="Weight of the replay term: maximum likelihood on every image the stage judged, "
         "resampled by its exact importance weight (0: off).",
    callback=in_range(0, MAX_LOSS_WEIGHT))]
CouplingOption = Annotated[Optional[str], typer.Option(
    help="The flow's couplings over a flat latent: spline (rational-quadratic) or affine "
         "(PromptGen's Glow blocks).", callback=lambda value: _one_of(value, COUPLING_CHOICES))]
DefensiveOption = Annotated[Optional[float], typer.Option(
    help="Share of each batch drawn from the base for the forward-KL term (0 to 0.9).",
    callback=in_range(0, 0.9))]
TemperOption = Annotated[Optional[float], typer.Option(
    help="Train towards p0·exp(-S·E_pointwise) instead of the exact target (S=1); recorded "
         "in the manifest and named in the report.",
    callback=in_range(0, MAX_TEMPER, low_open=True))]
DeviceOption = Annotated[str, typer.Option(
    help="cpu, cuda, cuda:N or mps (present on this machine).", callback=check_device)]
ArtifactOutOption = Annotated[Optional[Path], typer.Option(
    "--out", "-o", help="Output directory.", parser=output_path, callback=new_folder)]
FileOutOption = Annotated[Optional[Path], typer.Option(
    "--out", "-o", help="File to write.", parser=output_path, callback=file_target)]

# Options shared by `run` and `eval`: which judges stand in for the world's defaults.
ClipOption = Annotated[Optional[str], typer.Option(
    "--clip", help="CLIP spec replacing the world's default (NAME:TAG, NAME:PATH, ...).")]
FaceAttributesOption = Annotated[Optional[str], typer.Option(
    "--face-attributes", help="Face attribute model: clip, fairface or fairface:PATH.")]
ThreadsOption = Annotated[Optional[int], typer.Option(
    help="torch CPU threads, at least 1 (default: the cores that other processes leave idle, "
         "by the 1-minute load average).", callback=in_range(1, MAX_THREADS))]


def idle_threads() -> int:
    """Return the CPU threads to use when none are asked for: the cores this process may run
    on minus the 1-minute load average (rounded), shared among torchrun's local processes,
    at least 1.

    torch's own default takes every core; when other processes hold them, its threads wait
    on each other and a run goes 10-40 times slower than on one thread (measured on the
    2-core development machine).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        busy = 0.0
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, int(cores - busy + 0.5) // local)


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads (``idle_threads()`` when None); return the number set."""
    import torch

    chosen = threads or idle_threads()
    torch.set_num_threads(chosen)
    return chosen


_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        from energyql import __version__

        stdout.print(f"energyql {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", is_eager=True,
        callback=_print_version)] = False,
) -> None:
    _state["debug"] = debug


def fail(error: BaseException) -> typer.Exit:
    """Print ``error`` to stderr and return the Exit to raise (2: expression, 1: runtime)."""
    if _state["debug"]:
        import traceback

        traceback.print_exception(error, file=sys.stderr)
    stderr.print(Text.assemble(("error: ", "bold red"), describe(error)))
    usage = isinstance(error, (ExpressionError, UnknownGeneratorError, UsageError))
    return typer.Exit(code=2 if usage else 1)


def describe(error: BaseException) -> str:
    """Return the text to show for ``error``: its message, or its kind when that is empty."""
    try:
        text = str(error).strip()
    except Exception:  # a broken __str__ must not hide the error it describes
        text = ""
    return text or f"{type(error).__name__} (no message)"


#: Exit status after Ctrl-C, as shells report a process stopped by SIGINT (128 + 2).
INTERRUPTED = 130


def guarded(function):
    """Run ``function``; turn an EnergyQLError into a clean message and exit code, and Ctrl-C
    into "interrupted" and exit 130."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except EnergyQLError as error:
            raise fail(error) from None
        except KeyboardInterrupt:
            if _state["debug"]:
                import traceback

                traceback.print_exc(file=sys.stderr)
            stderr.print(Text("interrupted", style="bold red"))
            raise typer.Exit(code=INTERRUPTED) from None

    return wrapper


def check_sampler(name: str) -> str:
    """Refuse an unknown sampler name before anything is loaded (a usage error, exit 2)."""
    from energyql.baselines import SAMPLERS

    return check_choice(name, SAMPLERS, what="sampler")


def main() -> None:
    import energyql.cli  # noqa: F401  (registers every command on ``app``)

    failed = True
    try:
        app()
        failed = False
    except KeyboardInterrupt:  # outside a command's own guard (e.g. while importing torch)
        stderr.print(Text("interrupted", style="bold red"))
        raise SystemExit(INTERRUPTED) from None
    except SystemExit as exit_:
        failed = exit_.code not in (0, None)
        raise
    finally:
        # Under torchrun, leave the process group before the interpreter exits (see
        # energyql.distributed.shutdown); a no-op otherwise, and torch is not imported for it.
        if "torch.distributed" in sys.modules:
            from energyql.distributed import shutdown

            shutdown(wait_for_peers=not failed)
