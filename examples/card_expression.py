"""The design card's expression, on the embedded shapes world.

On faces the card reads ``clip("a smiling man") & uniform(race x age) | then debias(clip_bias)``:
a text prompt, a uniform joint over attributes the prompt leaves open, and a second stage that
removes the prompt's reporting bias. The same shape on shapes: a colour from the prompt, every
shape equally often, then the size CLIP drifts towards (the shapes world's ``clip_bias``) evened
out. Writes the artifact, grids, metrics, ``log.jsonl``, ``curves.png`` and the report.

    python examples/card_expression.py --out runs/card            # the world's defaults
    python examples/card_expression.py --quick --out /tmp/card    # seconds, to try it
"""

from __future__ import annotations

import argparse

import energyql as eq

EXPRESSION = 'clip("a blue shape") & uniform(shape) | then debias(clip_bias)'
# Seconds-scale settings: enough to run every phase, not to reach the targets.
QUICK = dict(steps=6, batch=16, blocks=4, width=64, warm_start_samples=128,
             moment_samples=128, refit_every=3, refit_samples=64, clip_copies=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/card", help="output folder")
    parser.add_argument("--quick", action="store_true", help="seconds-scale settings")
    args = parser.parse_args()

    program = eq.compile(EXPRESSION, gen="shapes")   # checked against the world's catalog
    print("canonical:", program)                       # clip_bias resolved to size
    settings = {**QUICK, "threads": 1} if args.quick else {}
    artifact = eq.train(program, gen="shapes", out=args.out, report=True,
                        samples=100 if args.quick else 2000, **settings)
    metrics = artifact.manifest.metrics
    for key, value in metrics["kl_to_target"].items():
        print(f"KL to target ({key}): base {metrics['base']['kl_to_target'][key]:.3f} "
              f"-> {value:.3f}")
    print(f"report: {args.out}/report.md (and report.html)")


if __name__ == "__main__":
    main()
