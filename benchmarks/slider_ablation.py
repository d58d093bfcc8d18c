"""A weight slider's sweep under other training settings: the ablation of docs/sliders.md.

Trains ``(w in 0..3) * (glasses == yes) & uniform(race x age)`` on portraits through
``energyql.train`` with the world's defaults and the given overrides, then measures the one
flow at w = 0, 0.3, 0.6, 1.5 and 3 (``benchmarks/sliders.py``'s figures: true and judged
glasses share, ESS/N, KL̂, race x age KL on truth) on ``--samples`` samples each.

    python benchmarks/slider_ablation.py [--set KEY=VALUE ...] [--samples 1000] [--json F]
    python benchmarks/slider_ablation.py --exact [--pool 40000] [--json F]

e.g. ``--set slider_frequencies=0`` (the raw slider value only) or ``--set chain_weight=0``.
``--exact`` trains nothing: it measures the exact target's true glasses share at each setting,
base samples weighted by the target's exact weights ``exp(-w·E + λ(w)·φ)`` (λ from the grid
fit training makes), with their effective sample size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sliders import WORLDS, _setting, measure, train  # noqa: E402  (benchmarks/sliders.py)

SETTINGS = (0.0, 0.3, 0.6, 1.5, 3.0)


def exact_shares(pool_size: int) -> dict[str, dict[str, float]]:
    """The exact target's true glasses share at each of SETTINGS, on ``pool_size`` judged base
    samples weighted by the exact weights."""
    import torch

    import energyql as eq
    from energyql.catalog import CATALOGS
    from energyql.energies import ControlModels, lower_stage
    from energyql.generators import load as load_generator
    from energyql.target import StageTarget
    from energyql.training.config import TrainConfig
    from energyql.training.fit import fit_lambda_grid, judge_slider_pool

    spec = WORLDS["portraits-weight"]
    program = eq.compile(spec["program"], gen="portraits")
    energy = lower_stage(program.stages[-1], ControlModels(program.catalog_obj))
    generator = load_generator("portraits")
    target = StageTarget(generator, energy)
    config = TrainConfig()
    fit_lambda_grid(target, config.moment_samples, config, torch.Generator().manual_seed(0))
    grid = energy.lambda_grid
    grid.exact = True
    pool = judge_slider_pool(target, pool_size, config, torch.Generator().manual_seed(7))
    catalog = CATALOGS[generator.catalog] if isinstance(generator.catalog, str) \
        else generator.catalog
    attribute, value = spec["cell"]
    index = next(list(a.values) for a in catalog.attributes if a.name == attribute).index(value)
    drawn = (generator.truth(pool.z)[attribute] == index).double()
    out = {}
    for setting in SETTINGS:
        context = torch.tensor([[setting]], dtype=torch.float64)
        log_w = -pool.pointwise(context)[0] + (grid.at(context).double()
                                                @ pool.phi.double().T)[0]
        weights = torch.softmax(log_w, 0)
        out[str(setting)] = {"exact_true_share": round(float((weights * drawn).sum()), 4),
                             "ess": round(float(1 / (weights * weights).sum()), 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting (TrainConfig field) over the defaults")
    parser.add_argument("--samples", type=int, default=1000, help="samples judged per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--exact", action="store_true",
                        help="measure the exact target's shares instead of training")
    parser.add_argument("--pool", type=int, default=40_000, help="base samples for --exact")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    spec = WORLDS["portraits-weight"]
    if args.exact:
        return _emit({"program": spec["program"], "pool": args.pool,
                      "exact": exact_shares(args.pool)}, args.json)
    overrides = dict(_setting(item) for item in args.set)
    began = time.perf_counter()
    artifact, record = train(spec["program"], "portraits", **overrides)
    out = {"program": spec["program"], "overrides": overrides, "samples": args.samples,
           "threads": args.threads, "images": record["images"],
           "seconds": round(time.perf_counter() - began), "at": {}}
    for value in SETTINGS:
        out["at"][str(value)] = measure(artifact.at({spec["slider"]: value}), spec,
                                        args.samples)
        print(f"  w = {value}: {out['at'][str(value)]}", file=sys.stderr, flush=True)
    return _emit(out, args.json)


def _emit(result: dict, path: str | None) -> int:
    """Print the result as JSON, and write it to ``path`` when given."""
    text = json.dumps(result, indent=2)
    if path:
        Path(path).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
