"""Iterative control: train a stage, look at it, then add another on top (``--from``).

The second call starts from the saved artifact (``start=``, the CLI's ``--from``); its stage
is trained on the first stage's samples, and the artifact it writes holds both stages.

    python examples/iterative_control.py --quick --out /tmp/iterative
    # the same from the command line:
    #   energyql run 'color == red' --gen shapes --out runs/red
    #   energyql run 'then uniform(shape)' --from runs/red --out runs/red-shapes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import energyql as eq

QUICK = dict(steps=6, batch=16, blocks=4, width=64, warm_start_samples=128,
             moment_samples=128, refit_every=3, refit_samples=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/iterative", help="output folder")
    parser.add_argument("--quick", action="store_true", help="seconds-scale settings")
    args = parser.parse_args()
    settings = {**QUICK, "threads": 1} if args.quick else {}
    samples = 100 if args.quick else 2000
    first, second = Path(args.out) / "red", Path(args.out) / "red-shapes"

    red = eq.train("color == red", gen="shapes", out=first, report=True, samples=samples,
                   **settings)
    print("stage 1 shapes:", _rounded(red.manifest.metrics["attributes"]["shape"]))

    # Not happy with the shape mix? Add a stage; the first one is kept as it is.
    both = eq.train("then uniform(shape)", start=first, out=second, report=True,
                    samples=samples, **settings)
    print("stage 2 shapes:", _rounded(both.manifest.metrics["attributes"]["shape"]))
    print("canonical:", both.manifest.canonical)
    print(f"report with both stages side by side: {second}/report.md")


def _rounded(shares: dict) -> dict:
    return {k: round(v, 2) for k, v in shares.items()}


if __name__ == "__main__":
    main()
