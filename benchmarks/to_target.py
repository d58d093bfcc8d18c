"""Images to target: how many generator-decoded images training needs until a goal holds.

Training runs through ``energyql.train`` (the same code path and defaults as ``energyql run``);
an ``on_step`` callback judges the flow every ``every`` steps on fresh samples with the
generator's own ground truth (what it drew, not what a classifier thinks), and records the
images the generator has decoded so far for training (λ fits, the mass-covering start's pool,
every step's batch; each image counted once whether or not it was back-propagated through:
``images_backward`` counts those). The judging itself is measurement and is not counted.

    python benchmarks/to_target.py [--goal NAME ...] [--every 25] [--json F] [--set KEY=VALUE ...]

``--set`` trains with other settings (TrainConfig fields), for the ablation table in
docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

RARE_VALUES = {"shape": "triangle", "color": "blue"}
# Issue 22: every attribute a program leaves free stays within this TV of the exact target.
DRIFT_GOAL = 0.03


@dataclass(frozen=True)
class Goal:
    """A program and the figure its flow must reach within an image budget (issue 13)."""

    name: str
    program: str
    figure: str        # "share" of the wanted attribute values, or "kl" of a joint to uniform
    threshold: float
    budget: int        # images decoded for training
    wanted: tuple[tuple[str, str], ...] = ()
    joint: tuple[str, ...] = ()
    gen: str = "shapes"
    kl_threshold: float | None = None  # a share goal that also needs the joint's KL this low
    # Base samples that estimate the exact target for the drift figure (a rare target needs
    # many: its weights' ESS is about the base share times this).
    reference_samples: int = 16_000

    def met(self, value: float, kl: float | None = None) -> bool:
        if self.figure != "share":
            return value <= self.threshold
        return value >= self.threshold and (self.kl_threshold is None
                                            or (kl is not None and kl <= self.kl_threshold))

    def met_by(self, point: dict[str, Any]) -> bool:
        """Whether a curve point (``share`` / ``kl`` figures) meets the goal."""
        return self.met(point[self.figure], point.get("kl"))


GOALS = {
    "blue_triangle": Goal("blue_triangle", "color == blue & shape == triangle", "share", 0.9,
                          20_000, (("shape", "triangle"), ("color", "blue")),
                          reference_samples=60_000),
    "red_circle": Goal("red_circle", "color == red & shape == circle", "share", 0.9, 15_000,
                       (("shape", "circle"), ("color", "red"))),
    "uniform": Goal("uniform", "uniform(shape x color)", "kl", 0.02, 40_000,
                    joint=("shape", "color")),
    "clip_blue_triangle": Goal("clip_blue_triangle", 'clip("a blue triangle")', "share", 0.85,
                               120_000, (("shape", "triangle"), ("color", "blue"))),
}
# The portraits world's analogues: its rarest appearance-group x age cell (0.6 % of the
# base), and the design card's first stage (smiling men, race x age made uniform).
PORTRAITS_GOALS = {
    "portraits_rare_cell": Goal("portraits_rare_cell", "race == delta & age == old", "share",
                                0.9, 10_000, (("race", "delta"), ("age", "old")),
                                gen="portraits", reference_samples=30_000),
    "portraits_card_stage1": Goal("portraits_card_stage1",
                                  'clip("a smiling man") & uniform(race x age)', "share", 0.95,
                                  120_000, (("smiling", "yes"), ("gender", "male")),
                                  joint=("race", "age"), gen="portraits", kl_threshold=0.02),
}
ALL_GOALS = {**GOALS, **PORTRAITS_GOALS}


def truth_figures(goal: Goal, sampler, n: int = 2000, seed: int = 123) -> dict[str, float]:
    """The goal's figures (``share`` of the wanted values and/or ``kl`` of the joint to
    uniform) on ``n`` samples of a one-stage sampler, from the generator's truth."""
    root = sampler.root
    values = _catalog_values(root)
    with torch.no_grad():
        eps = torch.randn(n, sampler.latent_dim, generator=torch.Generator().manual_seed(seed))
        drawn = root.truth(sampler.latent(eps))
    figures = {}
    if goal.wanted:
        hit = torch.ones(n, dtype=torch.bool)
        for attribute, value in goal.wanted:
            hit &= drawn[attribute] == values[attribute].index(value)
        figures["share"] = float(hit.float().mean())
    if not goal.joint:
        return figures
    sizes = [len(values[a]) for a in goal.joint]
    index = torch.zeros(n, dtype=torch.long)
    for attribute, size in zip(goal.joint, sizes):
        index = index * size + drawn[attribute]
    cells = math.prod(sizes)
    shares = torch.bincount(index, minlength=cells).double() / n
    figures["kl"] = float((shares * (shares.clamp(min=1e-12) * cells).log()).sum())
    return figures


def _catalog_values(generator) -> dict[str, list[str]]:
    from energyql.catalog import CATALOGS

    catalog = CATALOGS[generator.catalog] if isinstance(generator.catalog, str) \
        else generator.catalog
    return {a.name: list(a.values) for a in catalog.attributes}


def images_to_target(goal: Goal, *, every: int = 25, samples: int = 2000,
                     progress: bool = False, **settings: Any) -> tuple[dict[str, Any], Any]:
    """Train ``goal.program`` with the defaults (and ``settings``); return its record and the
    trained artifact. The record holds the curve and ``images_to_target``: images decoded
    until the figure first met the goal (None: never)."""
    import energyql

    curve: list[dict[str, Any]] = []

    def on_step(info) -> None:
        if info.step % every and info.step != info.steps:
            return
        figures = {k: round(v, 4) for k, v in truth_figures(goal, info.sampler, samples).items()}
        curve.append({"step": info.step, "images": info.images,
                      "images_backward": info.images_backward,
                      "seconds": round(info.seconds, 1), **figures})
        print(f"  {goal.name} step {info.step}: {info.images:,} images, {figures}",
              file=sys.stderr, flush=True)

    began = time.perf_counter()
    artifact = energyql.train(goal.program, gen=goal.gen, progress=progress, on_step=on_step,
                              **settings)
    wall = time.perf_counter() - began
    exactness = exactness_figures(goal, artifact, samples)
    first = next((c for c in curve if goal.met_by(c)), None)
    final = curve[-1]
    record = artifact.manifest.stages[-1].train
    return {
        "program": goal.program, "figure": goal.figure, "threshold": goal.threshold,
        "budget": goal.budget, "images_to_target": first["images"] if first else None,
        "seconds_to_target": first["seconds"] if first else None,
        "kl_threshold": goal.kl_threshold, "generator": goal.gen,
        "final": final, "holds_at_end": goal.met_by(final),
        "met": bool(first and first["images"] <= goal.budget and goal.met_by(final)),
        "images": record.images if record else None,
        "images_backward": record.images_backward if record else None,
        "train_seconds": record.seconds if record else None, "wall_seconds": round(wall, 1),
        **exactness, "drift_met": exactness["max_drift"] is None
        or exactness["max_drift"] <= DRIFT_GOAL,
        "settings": {k: v for k, v in (record.settings.items() if record else ())
                     if k in ("steps", "batch", "lr", "warm_start_samples", "forward_weight",
                              "score_share", "chain_weight", "defensive", "temper", "blocks",
                              "width")},
        "curve": curve,
    }, artifact


def exactness_figures(goal: Goal, artifact, samples: int) -> dict[str, Any]:
    """How close the trained flow is to the stage's exact target: ESS/N and KL̂ on its own
    samples, and the drift (TV, on ground truth) of every attribute the program leaves free
    from the exact target, estimated by ``goal.reference_samples`` base samples pooled with
    the evaluation's flow samples (energyql.reference), with each drift's standard error.
    """
    import energyql

    metrics = energyql.evaluate(artifact, samples=samples, base_samples=goal.reference_samples)
    closeness = next(iter(metrics.get("closeness", {}).values()), {})
    drift = metrics.get("truth", {}).get("collateral_drift") or {}
    tv, errors = drift.get("tv", {}), drift.get("tv_se", {})
    largest = max(tv, key=tv.get, default=None)
    return {"ess_fraction": closeness.get("ess_fraction"), "kl_hat": closeness.get("kl"),
            "drift": tv, "drift_se": errors,
            "max_drift": tv[largest] if largest else None,
            "max_drift_se": errors.get(largest) if largest else None,
            "reference": {"base_samples": drift.get("base_samples"),
                          "ess": drift.get("base_ess"),
                          "flow_samples": drift.get("flow_samples"),
                          "pooled_ess": drift.get("reference_ess")}}


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--goal", action="append", choices=sorted(ALL_GOALS),
                        help="which goals (default: the four shapes goals)")
    parser.add_argument("--every", type=int, default=25, help="judge every N steps")
    parser.add_argument("--samples", type=int, default=2000, help="samples judged each time")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting (TrainConfig field) over the defaults")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = {}
    for item in args.set:
        key, _, text = item.partition("=")
        settings[key] = _value(text)
    results = {}
    for name in args.goal or list(GOALS):
        goal = ALL_GOALS[name]
        print(f"{name}: {goal.program}", file=sys.stderr, flush=True)
        results[name], _ = images_to_target(goal, every=args.every, samples=args.samples,
                                            threads=args.threads, **settings)
        summary = {k: results[name][k] for k in ("images_to_target", "holds_at_end", "met",
                                                 "max_drift", "ess_fraction", "kl_hat")}
        print(f"{name}: {summary} final {results[name]['final']}", file=sys.stderr, flush=True)
    text = json.dumps({"settings": {"threads": args.threads, "every": args.every,
                                    "samples": args.samples, "overrides": settings},
                       "images_to_target": results}, indent=2)
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
