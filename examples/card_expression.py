"""The design card's expression, literally, on the embedded portraits world.

``clip("a smiling man") & uniform(race x age) | then debias(clip_bias)``: a text prompt, a
uniform joint over attributes the prompt leaves open, and a second stage that removes what the
small CLIP's reporting bias added (here glasses, beard and hair, each brought back to the
generator's own distribution given "smiling" and "man"). The portraits generator says what it
drew, so the script prints the figures on ground truth beside the judged ones. Writes the
artifact, grids, metrics, ``log.jsonl``, ``curves.png`` and the report.

    python examples/card_expression.py --out runs/card            # the world's defaults (~13 min)
    python examples/card_expression.py --quick --out /tmp/card    # seconds, to try it
"""

from __future__ import annotations

import argparse

import energyql as eq

EXPRESSION = 'clip("a smiling man") & uniform(race x age) | then debias(clip_bias)'
# Seconds-scale settings: enough to run every phase, not to reach the targets.
QUICK = dict(steps=6, batch=16, blocks=4, width=64, warm_start_samples=128,
             moment_samples=128, refit_every=3, refit_samples=64, clip_copies=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/card", help="output folder")
    parser.add_argument("--quick", action="store_true", help="seconds-scale settings")
    args = parser.parse_args()

    program = eq.compile(EXPRESSION, gen="portraits")  # checked against the world's catalog
    print("canonical:", program)                         # debias(clip_bias) prints as written
    settings = {**QUICK, "threads": 1} if args.quick else {}
    artifact = eq.train(program, gen="portraits", out=args.out, report=True,
                        samples=100 if args.quick else 2000, **settings)
    metrics = artifact.manifest.metrics
    truth = metrics["truth"]
    smiling_men = truth["joint"]["gender x smiling"]["male,yes"]
    base = metrics["base"]["truth"]["joint"]["gender x smiling"]["male,yes"]
    print(f"smiling men (drawn): base {base:.3f} -> {smiling_men:.3f}")
    for key, value in truth["tv_to_target"].items():
        print(f"TV to target ({key}, drawn): {value:.3f}")
    print(f"report: {args.out}/report.md (and report.html)")


if __name__ == "__main__":
    main()
