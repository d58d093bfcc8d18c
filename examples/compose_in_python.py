"""Compose programs in Python: the combinators build the same graph the parser builds.

    python examples/compose_in_python.py --quick --out /tmp/compose
"""

from __future__ import annotations

import argparse

import energyql as eq

QUICK = dict(steps=6, batch=16, blocks=4, width=64, warm_start_samples=128,
             moment_samples=128, refit_every=3, refit_samples=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/compose", help="output folder")
    parser.add_argument("--quick", action="store_true", help="seconds-scale settings")
    args = parser.parse_args()

    # Building blocks are ordinary Python values: name them, combine them, reuse them.
    red = eq.attr("color", "red")
    not_small = ~eq.attr("size", "small")
    spread = eq.uniform("shape")
    program = (red & not_small & spread) | eq.debias("size")

    # The same program written as text compiles to an equal graph, and prints back as text.
    text = "color == red & not size == small & uniform(shape) | then debias(size)"
    assert program == eq.compile(text), (str(program), text)
    print("program:", program)
    print("stages:", len(program.checked("shapes").stages))

    # Weights scale a term's energy: here the colour counts twice as much as the rest.
    weighted = 2 * red & spread
    print("weighted:", weighted)

    settings = {**QUICK, "threads": 1} if args.quick else {}
    artifact = eq.train(program, gen="shapes", out=args.out, report=True,
                        samples=100 if args.quick else 2000, **settings)
    shares = artifact.manifest.metrics["attributes"]["color"]
    print("color shares after training:", {k: round(v, 2) for k, v in shares.items()})


if __name__ == "__main__":
    main()
