"""Conditional control: one flow for a range of poses, the same shape kept across them.

``pose(x in 0.3..0.7) & keep(identity)`` trains a flow that takes the requested x as input.
Afterwards one noise gives the same shape at any x in the trained range: a sweep grid has one
row per noise and one column per x. Values outside 0.3..0.7 are refused (the flow never saw
them).

    python examples/conditional_sweep.py --quick --out /tmp/pose
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import energyql as eq
from energyql.report import save_grid

QUICK = dict(steps=6, batch=16, blocks=4, width=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/pose", help="output folder")
    parser.add_argument("--quick", action="store_true", help="seconds-scale settings")
    args = parser.parse_args()
    settings = {**QUICK, "threads": 1} if args.quick else {}
    eq.train("pose(x in 0.3..0.7) & keep(identity)", gen="shapes", out=args.out, report=True,
             samples=100 if args.quick else 2000, **settings)

    sampler = eq.Sampler.load(args.out)
    (param,) = sampler.context_params
    print(f"context: {param.name} in {param.low:g}..{param.high:g}")
    eps = sampler.noise(6, seed=0)
    columns = torch.linspace(param.low, param.high, 7).tolist()
    rows = [sampler(eps, {param.name: x}) for x in columns]     # each (6, 3, 32, 32)
    grid = torch.stack(rows, dim=1).flatten(0, 1)                # row = noise, column = x
    path = save_grid(Path(args.out) / "my-sweep.png", grid, columns=len(columns), scale=2)
    print(f"sweep: {path}")
    try:
        sampler.sample(4, context={param.name: param.high + 0.3})
    except eq.UsageError as error:
        print("outside the range:", error.message)


if __name__ == "__main__":
    main()
