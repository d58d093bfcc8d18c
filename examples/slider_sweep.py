"""Sliders: one trained flow, a target you set at sample time.

``dist(color, blue = p in 0.1..0.9)`` trains one flow whose blue share follows the slider:
``sampler.sample(n, p=0.3)`` draws from the exact target at p = 0.3, ``p=0.8`` from another,
with no retraining and no control model at sample time. The loop below sweeps p in plain
torch, counts blue shapes on the world's ground truth (the generator knows what it drew) and
writes one grid row per setting. A value outside 0.1..0.9 is refused: the flow never saw it.

    python examples/slider_sweep.py --out runs/blue-share           # the world's defaults
    python examples/slider_sweep.py --quick --out /tmp/blue-share   # seconds, to try it
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import energyql as eq
from energyql.report import save_grid

EXPRESSION = "dist(color, blue = p in 0.1..0.9)"
QUICK = dict(steps=6, batch=16, blocks=4, width=64, warm_start_samples=256, moment_samples=256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/blue-share", help="output folder")
    parser.add_argument("--quick", action="store_true", help="seconds-scale settings")
    args = parser.parse_args()
    settings = {**QUICK, "threads": 1} if args.quick else {}
    program = eq.compile(EXPRESSION, gen="shapes")
    print("sliders:", ", ".join(str(s) for s in program.sliders))
    eq.train(program, gen="shapes", out=args.out, report=True,
             samples=100 if args.quick else 2000, **settings)

    sampler = eq.Sampler.load(args.out)                 # needs only the generator
    generator = eq.load_generator("shapes")
    blue = program.catalog_obj.attribute("color").values.index("blue")
    rows = []
    with torch.no_grad():
        for p in torch.linspace(0.1, 0.9, 5).tolist():
            eps = sampler.noise(400, seed=0)            # the same noise at every setting
            z = sampler.latents(eps, {"p": p})
            drawn = generator.truth(z)["color"]         # what the generator drew, per image
            share = float((drawn == blue).float().mean())
            print(f"p={p:.1f}: blue share on ground truth {share:.3f}")
            rows.append(sampler(eps[:8], {"p": p}))
    grid = torch.cat(rows)                              # one row of 8 images per setting
    path = save_grid(Path(args.out) / "my-slider-sweep.png", grid, columns=8, scale=2)
    print(f"sweep: {path}")
    try:
        sampler.sample(4, p=0.95)
    except eq.UsageError as error:
        print("outside the range:", error.message)


if __name__ == "__main__":
    main()
