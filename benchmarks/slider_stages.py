"""A stage after a slider stage, measured on ground truth at several settings (issue 24).

Trains (or loads) ``dist(color, blue = p in 0.1..0.9) | then shape == triangle`` on shapes at
the world's defaults and, at each setting, reads what the generator drew:

- after stage 1: the blue share (what the slider asks for) and the triangle share;
- the exact blue share of stage 2's target, estimated on stage 1's samples: the share of blue
  among stage 1's triangles (stage 2 tilts stage 1 by the judge's P(triangle), which agrees
  with the truth on 99.7 % of samples);
- after stage 2: the blue and triangle shares.

    python benchmarks/slider_stages.py --out runs/blue-triangles [--samples 20000]
                                       [--final-samples 2000] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

PROGRAM = "dist(color, blue = p in 0.1..0.9) | then shape == triangle"
SETTINGS = (0.1, 0.3, 0.5, 0.7, 0.9)
# The shapes truth codes: color (red, green, blue), shape (circle, square, triangle).
BLUE, TRIANGLE = 2, 2


def shares_at(artifact: Any, p: float, samples: int, final_samples: int) -> dict[str, float]:
    """The stage-1, exact and final shares at one setting (see the module docstring)."""
    first, second = artifact.at(p=p).sampler.stages
    root = first.root
    eps = torch.randn(samples, root.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        early = root.truth(first.latent(eps))
        late = root.truth(first.latent(second.latent(eps[:final_samples])))
    blue, triangle = early["color"] == BLUE, early["shape"] == TRIANGLE
    return {"p": p,
            "stage1_blue": round(float(blue.float().mean()), 4),
            "stage1_triangle": round(float(triangle.float().mean()), 4),
            "exact_blue": round(float((blue & triangle).sum() / triangle.sum()), 4),
            "stage1_triangles_counted": int(triangle.sum()),
            "final_blue": round(float((late["color"] == BLUE).float().mean()), 4),
            "final_triangle": round(float((late["shape"] == TRIANGLE).float().mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    import energyql as eq

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the run's folder (trained if empty)")
    parser.add_argument("--samples", type=int, default=20000, help="stage-1 samples per setting")
    parser.add_argument("--final-samples", type=int, default=2000,
                        help="final samples per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if Path(args.out, "manifest.json").is_file():
        artifact = eq.load(args.out)
    else:
        artifact = eq.train(PROGRAM, gen="shapes", out=args.out, progress=False)
    rows = []
    for p in SETTINGS:
        print(f"  at p = {p}", file=sys.stderr, flush=True)
        rows.append(shares_at(artifact, p, args.samples, args.final_samples))
    stages = artifact.manifest.stages
    result = {"program": PROGRAM, "threads": args.threads, "rows": rows,
              "seconds": [s.train.seconds if s.train else None for s in stages],
              "closeness": [s.closeness for s in stages],
              "max_final_off_exact": round(max(abs(r["final_blue"] - r["exact_blue"])
                                               for r in rows), 4)}
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
