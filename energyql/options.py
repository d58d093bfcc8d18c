"""``KEY=VALUE`` options as a command line passes them (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence

from energyql.errors import EnergyQLError, UsageError


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
        options[key.strip().replace("-", "_")] = value
    return options
