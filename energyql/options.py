"""``KEY=VALUE`` options as a command line passes them (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence

from energyql.errors import EnergyQLError, UsageError

# Bounds on every size a user can ask for, shared by the command line (a usage error, exit 2,
# before any work) and the Python API (energyql.train): a typo such as --batch 1000000000
# would otherwise allocate 128 GB, or train for ever, before anything fails.

#: Largest sample count a command accepts (-n, --samples): bounds the memory a typo can ask for.
MAX_SAMPLES = 1_000_000
#: Largest training batch (images decoded and back-propagated together).
MAX_BATCH = 1 << 16
#: Most training steps per stage.
MAX_STEPS = 10_000_000
#: Most CPU threads a run may ask torch for.
MAX_THREADS = 1024
#: Largest --temper (a factor on pointwise energies) and --forward-weight / --chain-weight:
#: beyond them the loss overflows to inf and every step is skipped, yet the run "succeeds".
MAX_TEMPER = 100.0
MAX_LOSS_WEIGHT = 1000.0
#: Fewest samples an evaluation report can judge (covariances and shares need two).
MIN_REPORT_SAMPLES = 2


def parse_key_values(pairs: Sequence[str], *, what: str, example: str,
                     error: type[EnergyQLError] = UsageError) -> dict[str, object]:
    """Return ``{key: value}`` from ``KEY=VALUE`` strings.

    Values become int, float or bool where they spell one (``pool=4096``, ``lr=0.01``,
    ``metropolis=true``); anything else stays text. Dashes in keys become underscores.

    Example:
        >>> parse_key_values(["pool=4096", "e_min=pilot"], what="sampler option",
        ...                  example="--option pool=4096")
        {'pool': 4096, 'e_min': 'pilot'}
    """
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise error(f"{what} '{pair}' is not KEY=VALUE", hint=f"e.g. {example}")
        value: object = text.strip()
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            value = lowered == "true"
        else:
            for convert in (int, float):
                try:
                    value = convert(text)
                    break
                except ValueError:
                    pass
        name = key.strip().replace("-", "_")
        if name in options:
            raise error(f"{what} '{name}' is given twice", hint=f"give each {what} once, e.g. "
                                                                f"{example}")
        options[name] = value
    return options

#: A flat latent's flow couplings (TrainConfig.coupling; energyql.flows.COUPLINGS has the
#: flow kind each makes).
COUPLING_CHOICES = ("spline", "affine")
