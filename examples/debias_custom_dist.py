"""De-bias towards a distribution of your own with ``dist(...)``.

``uniform(size)`` asks for every size equally often; ``dist(size, small=0.3, large=0.7)`` asks
for exactly these shares (values not listed share what is left). λ is fitted so that the
stage's samples meet the target; the report marks the target on each histogram.

    python examples/debias_custom_dist.py --quick --out /tmp/dist
"""

from __future__ import annotations

import argparse

import energyql as eq

QUICK = dict(steps=6, batch=16, blocks=4, width=64, warm_start_samples=128,
             moment_samples=128, refit_every=3, refit_samples=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/dist", help="output folder")
    parser.add_argument("--quick", action="store_true", help="seconds-scale settings")
    parser.add_argument("--small", type=float, default=0.3, help="target share of small shapes")
    args = parser.parse_args()

    target = eq.dist("size", small=args.small, large=1 - args.small)
    program = eq.attr("shape", "circle") & target    # circles, with these sizes
    print("program:", program)
    settings = {**QUICK, "threads": 1} if args.quick else {}
    artifact = eq.train(program, gen="shapes", out=args.out, report=True,
                        samples=100 if args.quick else 2000, **settings)
    metrics = artifact.manifest.metrics
    sizes = metrics["attributes"]["size"]
    print(f"size shares: base {_rounded(metrics['base']['attributes']['size'])} -> "
          f"{_rounded(sizes)} (target small={args.small:g})")
    print("KL to target:", _rounded(metrics["kl_to_target"]))


def _rounded(shares: dict) -> dict:
    return {k: round(v, 3) for k, v in shares.items()}


if __name__ == "__main__":
    main()
