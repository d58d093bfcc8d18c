"""energyql's benchmark suite on the shapes world (CPU): every figure a ratio measured in one run.

    python benchmarks/run.py --quick [--json PATH] [--threads 1] [--plot PATH]
    python benchmarks/run.py          [--json PATH]          # the full run (longer)

1. images_to_target  the four goals of docs/training.md trained with the trainer's defaults
                     (``energyql.train``, the code path of ``energyql run``): images decoded by
                     the generator until each goal holds, judged by the generator's own truth
2. overhead          images/s of the generator alone vs flow -> generator at the sampler's
                     batch (256) and at 64 (shapes; and a random-weight StyleGAN2 at 256 px)
3. speed             distinct on-target samples per second for the rare target (a blue
                     triangle) of every sampler in energyql.baselines, and the break-even
                     count once the flow's training is counted (seconds and images)
4. exactness         KL / TV of attribute distributions to the exact target (a long SIR
                     reference) of flow, flow+sir and flow+imh

JSON keys (stable): ``settings``, ``images_to_target`` (per goal: ``images_to_target`` —
images decoded during training until the goal first held, or null —, ``holds_at_end``,
``met``, ``final``, ``curve``, ``train_seconds``, ``images``, ``images_backward``),
``time_to_target`` (per program: the same curve by step and seconds), ``flow_overhead``
(shapes, batch 256: flow+generator time over generator time), ``flow_overhead_batch64``,
``flow_overhead_stylegan2_256``, ``overhead`` (details), ``speedup_vs_rejection``,
``speedup_vs_importance``, ``speedup_vs_langevin`` (each ``{"ratio", "on_target_share"}``: the
ratio of distinct on-target samples per second, flow over the other, and every sampler's
on-target share), ``samplers``, ``base_on_target_share``, ``train_seconds``, ``train_images``,
``break_even`` (on-target samples after which training plus flow sampling is cheaper),
``exactness``, ``missing`` (what could not be measured, and why).

The GPU benchmark (StyleGAN2-1024 + CLIP ViT-B-32) is benchmarks/gpu.py.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from to_target import ALL_GOALS, GOALS, images_to_target  # noqa: E402  (benchmarks/to_target.py)

RARE = GOALS["blue_triangle"].program
RARE_VALUES = {"shape": "triangle", "color": "blue"}
DEBIAS = GOALS["uniform"].program


# The sampler statistics each line of the progress log shows.
_SHOWN_STATS = ("acceptance_rate", "ess_fraction", "proposals")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


_PROGRESS = None


def _progress():
    """The run's progress (stderr): a bar on a terminal, timestamped lines otherwise."""
    global _PROGRESS
    if _PROGRESS is None:
        from energyql.progress import Progress

        _PROGRESS = Progress(enabled=True)
    return _PROGRESS


def _item(description: str):
    """A benchmark item's progress phase: start, a line every few seconds, end and duration."""
    return _progress().phase(description)


class World:
    """The shapes generator and classifier, and helpers to judge images with it."""

    def __init__(self, generator_weights: Path | None = None):
        import torch

        from energyql.energies import ControlModels
        from energyql.worlds.shapes.generator import load as load_generator

        self.generator = load_generator(path=generator_weights).eval()
        self.models = ControlModels("shapes")
        self.catalog = self.models.catalog
        self.torch = torch

    def log_probs(self, images, batch: int = 512) -> dict:
        with self.torch.no_grad():
            parts = [self.models.attributes(images[i:i + batch])
                     for i in range(0, len(images), batch)]
        return {k: self.torch.cat([p[k] for p in parts]) for k in parts[0]}

    def labels(self, images) -> dict:
        return {k: v.argmax(1) for k, v in self.log_probs(images).items()}

    def on_target(self, labels: dict, values: dict = RARE_VALUES):
        hits = [labels[a] == self.catalog.attribute(a).values.index(v) for a, v in values.items()]
        return self.torch.stack(hits).all(0)

    def joint(self, labels: dict, attrs=("shape", "color", "size"), weights=None) -> list[float]:
        """Return the distribution of the joint argmax of ``attrs`` (optionally weighted)."""
        torch = self.torch
        index = torch.zeros_like(labels[attrs[0]])
        size = 1
        for a in attrs:
            k = len(self.catalog.attribute(a).values)
            index, size = index * k + labels[a], size * k
        w = torch.ones(len(index), dtype=torch.float64) if weights is None else weights.double()
        counts = torch.zeros(size, dtype=torch.float64).index_add_(0, index, w)
        return (counts / counts.sum()).tolist()


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def overhead(generator, flow, batch: int, repeats: int) -> dict:
    """Time ``decode(z)`` against ``decode(flow(eps))`` at one batch size, interleaved."""
    import torch

    eps = torch.randn(batch, generator.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = lambda: generator.decode(eps)  # noqa: E731
        both = lambda: generator.decode(flow(eps)[0])  # noqa: E731
        flow_only = lambda: flow(eps)  # noqa: E731
        base(), both()  # warm-up
        rounds = [(_median_ms(base, 1), _median_ms(both, 1), _median_ms(flow_only, 1))
                  for _ in range(repeats)]
    g, fg, f = (statistics.median(r[i] for r in rounds) for i in range(3))
    return {"batch": batch, "repeats": repeats, "generator_ms": round(g, 3),
            "flow_generator_ms": round(fg, 3), "flow_ms": round(f, 3),
            "flow_share": round(f / g, 5),  # flow time alone over generator time: less noisy
            "generator_images_per_s": round(1000 * batch / g, 1),
            "flow_generator_images_per_s": round(1000 * batch / fg, 1),
            "ratio": round(fg / g, 4)}


def stylegan2_overhead(batch: int, repeats: int) -> dict:
    """Overhead of a default-size flow in front of a random-weight StyleGAN2 at 256 px."""
    from energyql.flows import FlowConfig, LatentFlow
    from energyql.generators.stylegan2 import StyleGAN2, StyleGAN2Generator

    net = StyleGAN2(256, 512, 8, channel_multiplier=2)
    generator = StyleGAN2Generator(net, mean_samples=256)
    flow = LatentFlow(FlowConfig(dim=512)).eval()
    return overhead(generator, flow, batch, repeats)


def _flow_labels(world: World, sampler, n: int, seed: int):
    import torch

    with torch.no_grad():
        images = sampler.sample(n, seed=seed)
    return world.labels(images)


def _kl(p: list[float], q: list[float]) -> float:
    return float(sum(a * math.log(a / max(b, 1e-12)) for a, b in zip(p, q) if a > 0))


def _tv(p: list[float], q: list[float]) -> float:
    return 0.5 * float(sum(abs(a - b) for a, b in zip(p, q)))


def reference(world: World, energy, pool: int, seed: int, batch: int = 512, *,
              attrs=("shape", "color", "size")) -> dict:
    """The exact target's joint distribution, from a long SIR of base samples (weighted)."""
    import torch

    from energyql.energies.base import Features
    from energyql.moments import effective_sample_size, fit_lambda

    rng = torch.Generator().manual_seed(seed)
    labels, pointwise, phis = {}, [], []
    with torch.no_grad():
        for start in range(0, pool, batch):
            m = min(batch, pool - start)
            latents = torch.randn(m, world.generator.latent_dim, generator=rng)
            images = world.generator.decode(latents)
            lp = world.models.attributes(images)
            features = Features(images, lambda _, lp=lp: lp, rng)  # the classifier runs once
            pointwise.append(energy.pointwise_energy(features).double())
            if energy.has_constraints:
                phis.append(energy.phi(features).double())
            for k, v in lp.items():
                labels.setdefault(k, []).append(v.argmax(1))
    labels = {k: torch.cat(v) for k, v in labels.items()}
    log_w = -torch.cat(pointwise)
    if phis:
        target = torch.cat([c.target for c in energy.constraints])
        fit = fit_lambda(torch.cat(phis), target, log_w)
        log_w = log_w + torch.cat(phis) @ fit.lam.double()
    weights = torch.softmax(log_w, 0)
    return {"joint": world.joint(labels, attrs, weights), "pool": pool,
            "ess": round(effective_sample_size(log_w), 1)}


def run_samplers(world: World, artifact, energy, counts: dict, seed: int, options: dict) -> dict:
    """Run each sampler for ``counts[name]`` samples; time it (sampling only), judge its images.

    Rates are per second, so the slow samplers may draw fewer samples than the fast ones."""
    from energyql.baselines import sample

    results = {}
    for name, extra in options.items():
        n = counts[name]
        began = time.perf_counter()
        source = artifact if name.startswith("flow") else world.generator
        result = sample(name, source, energy, n=n, seed=seed, **extra)
        seconds = time.perf_counter() - began
        labels = world.labels(result.images)
        hits = world.on_target(labels)
        share = float(hits.float().mean()) if len(result.images) else 0.0
        unique = int(result.latents.unique(dim=0).shape[0]) if len(result.latents) else 0
        # Repeats (SIR resampling, a rejected Metropolis move) are one sample, counted once.
        distinct_hits = int(result.latents[hits].unique(dim=0).shape[0]) if hits.any() else 0
        results[name] = {
            "seconds": round(seconds, 3), "samples": len(result.images),
            "samples_per_s": round(len(result.images) / seconds, 2),
            "on_target_share": round(share, 4), "on_target_distinct": distinct_hits,
            "on_target_per_s": round(distinct_hits / seconds, 3),
            "unique": unique, "options": extra,
            "stats": {k: v for k, v in result.stats.items() if k not in ("sampler",)},
            "joint": world.joint(labels),
        }
        _log(f"  {name:10s} {seconds:8.2f} s  share {share:.3f}  unique {unique}  "
             f"{ {k: v for k, v in result.stats.items() if k in _SHOWN_STATS} }")
    return results


def round_up(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above ``value`` (> 0): an axis
    top whose half reads cleanly (0.1002 made ticks of 0.1 and 0.0501)."""
    scale = 10.0 ** math.floor(math.log10(value))
    return next(s * scale for s in (1, 2, 2.5, 5, 10) if s * scale >= value * (1 - 1e-9))


def plot_curves(path: Path, title: str, curves: dict[str, list[tuple[float, float]]],
                ylabel: str, xlabel: str = "training step", goal: float | None = None) -> None:
    """Write a small line plot (PIL; no plotting library is a dependency), with a dashed
    line at ``goal`` if given."""
    from PIL import Image, ImageDraw

    width, height, left, top, bottom = 560, 300, 60, 30, 40
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((left, 8), title, fill="black")
    xs = [x for c in curves.values() for x, _ in c]
    ys = [y for c in curves.values() for _, y in c]
    x_max, y_max = max(xs), round_up(max(max(ys), goal or 0.0, 1e-6))
    w, h = width - left - 20, height - top - bottom
    draw.line([left, top, left, top + h, left + w, top + h], fill="black")
    for frac in (0, 0.5, 1):
        draw.text((4, top + h - frac * h - 6), f"{frac * y_max:.3g}", fill="black")
        draw.text((left + frac * w - 10, top + h + 6), f"{frac * x_max:.0f}", fill="black")
    draw.text((left + w // 2 - 40, height - 16), xlabel, fill="black")
    draw.text((left + 4, top + 2), ylabel, fill="black")
    if goal is not None:
        goal_y = top + h - goal / y_max * h
        for x in range(left, left + w, 8):
            draw.line([x, goal_y, min(x + 4, left + w), goal_y], fill="gray")
        draw.text((left + 4, goal_y - 12), f"goal {goal:g}", fill="gray")
    colours = ["#1f5fbf", "#bf5f1f", "#2f9f4f", "#8f2fbf"]
    for (label, curve), colour in zip(curves.items(), colours):
        points = [(left + x / x_max * w, top + h - y / y_max * h) for x, y in curve]
        draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        # The legend sits in the top right corner: a label at the curve's end fell off it.
        legend_y = top + 2 + 12 * list(curves).index(label)
        draw.text((left + w - 7 * len(label), legend_y), label, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the shorter run (~15 minutes)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--plot", type=Path, default=None, help="write the KL-vs-images plot here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", action="append", default=[],
                        choices=("overhead", "stylegan2", "speed", "exactness", "clip",
                                 "portraits"))
    args = parser.parse_args(argv)

    import torch

    from energyql.baselines import stage_energy

    torch.set_num_threads(args.threads)
    quick = args.quick
    n = 512 if quick else 2048
    began_all = time.perf_counter()
    out: dict = {"settings": {"quick": quick, "threads": args.threads, "seed": args.seed,
                              "torch": torch.__version__, "samples_per_sampler": n,
                              "rare_target": RARE},
                 "missing": {}}
    world = World()
    from energyql.workflow import defaults_for

    out["settings"]["train"] = defaults_for("shapes")  # what energyql.train used, no overrides

    # Base share of the rare target (the rejection sampler's acceptance depends on it).
    base_labels = _flow_labels(world, world.generator, 4096 if quick else 16384, args.seed + 11)
    base_share = float(world.on_target(base_labels).float().mean())
    out["base_on_target_share"] = round(base_share, 4)
    _log(f"base share of '{RARE}': {base_share:.4f}")

    # 1. Images to target: each goal trained once with the defaults, judged as it trains.
    every, judged = (25, 1000) if quick else (10, 4000)
    out["images_to_target"], out["time_to_target"], artifacts = {}, {}, {}
    goals = [name for name, goal in ALL_GOALS.items()
             if not ("clip" in args.skip and "clip(" in goal.program)
             and not ("portraits" in args.skip and goal.gen == "portraits")]
    for name in goals:
        goal = ALL_GOALS[name]
        with _item(f"images to target: '{goal.program}' (defaults, judged every {every} steps "
                   f"on {judged:,} samples)"):
            record, artifacts[name] = images_to_target(goal, every=every, samples=judged,
                                                       progress=_progress(), seed=args.seed,
                                                       threads=args.threads)
        out["images_to_target"][name] = record
        first = next((c for c in record["curve"] if goal.met_by(c)), None)
        out["time_to_target"][goal.program] = {
            "goal": {goal.figure: goal.threshold}, "trajectory": record["curve"],
            "reached_at_step": first["step"] if first else None,
            "reached_after_seconds": first["seconds"] if first else None}
    for name in ALL_GOALS:
        if name not in goals:
            out["missing"][f"images_to_target {name}"] = "skipped (--skip)"
    rare = out["images_to_target"]["blue_triangle"]
    out["train_seconds"], out["train_images"] = rare["train_seconds"], rare["images"]
    rare_artifact = artifacts["blue_triangle"]
    rare_sampler = rare_artifact.sampler.eval()
    rare_energy = stage_energy(rare_artifact, models=world.models)
    if args.plot:
        curve = out["images_to_target"]["uniform"]["curve"]
        plot_curves(args.plot, f"de-biasing '{DEBIAS}': KL of shape x color to uniform",
                    {"defaults": [(c["images"] / 1000, c["kl"]) for c in curve]}, "KL",
                    xlabel="thousand images decoded", goal=GOALS["uniform"].threshold)

    if "overhead" not in args.skip:
        with _item("overhead: shapes, batch 256 (the sampler's) and 64"):
            out["overhead"] = {"shapes": overhead(world.generator, rare_sampler.flow, 256,
                                                  9 if quick else 30),
                               "shapes_batch64": overhead(world.generator, rare_sampler.flow,
                                                          64, 15 if quick else 50)}
        out["flow_overhead"] = out["overhead"]["shapes"]["ratio"]
        out["flow_overhead_batch64"] = out["overhead"]["shapes_batch64"]["ratio"]
        if "stylegan2" not in args.skip:
            # ~1.5 s per 256 px image on one contested core: the quick run uses a small batch
            # (the flow's share of the time only shrinks as the batch grows).
            batch, repeats = (4, 3) if quick else (64, 2)
            with _item(f"overhead: StyleGAN2 256 px random weights, batch {batch}"):
                out["overhead"]["stylegan2_256"] = stylegan2_overhead(batch, repeats)
            out["flow_overhead_stylegan2_256"] = out["overhead"]["stylegan2_256"]["ratio"]

    if "speed" not in args.skip:
        # SIR with a pool of n / base share has ESS ~ n (as diverse as the others); capped,
        # like rejection's proposals, so that a generator without the target still finishes.
        pool = min(int(math.ceil((n // 4 if quick else n) / max(base_share, 1e-6))), 64 * n)
        options = {
            "flow": {}, "flow+sir": {"pool": 4 * n}, "flow+imh": {"chains": 8, "burn_in": 16},
            "rejection": {"max_proposals": 64 * n}, "importance": {"pool": pool},
            "langevin": {"steps": 50 if quick else 100, "step_size": 0.05},
        }
        slow = n // 4 if quick else n
        counts = {k: (n if k.startswith("flow") else slow) for k in options}
        with _item(f"speed: {n} samples per flow sampler, {slow} per other, target '{RARE}'"):
            out["samplers"] = run_samplers(world, rare_artifact, rare_energy, counts,
                                           args.seed + 31, options)
        s = out["samplers"]
        shares = {k: v["on_target_share"] for k, v in s.items()}
        r_flow = s["flow"]["on_target_per_s"]
        for other in ("rejection", "importance", "langevin"):
            r = s[other]["on_target_per_s"]
            ratio = round(r_flow / r, 2) if r > 0 else None  # None: the other hit nothing
            out[f"speedup_vs_{other}"] = {"ratio": ratio, "on_target_share": shares}
        # Break-even: N on-target samples cost T_train + N / r_flow with the flow and N / r
        # without; equal at N = T_train / (1/r - 1/r_flow).
        out["break_even"] = {}
        for other in ("rejection", "importance", "langevin", "flow+sir", "flow+imh"):
            r = s[other]["on_target_per_s"]
            gap = (1 / r if r > 0 else math.inf) - (1 / r_flow if r_flow > 0 else math.inf)
            out["break_even"][other] = (round(out["train_seconds"] / gap)
                                        if 0 < gap < math.inf else None)

    if "exactness" not in args.skip:
        from energyql.baselines import sample

        out["exactness"] = {}
        cases = [(RARE, rare_artifact, rare_energy, ("shape", "color", "size"))]
        debias_artifact = artifacts["uniform"]
        cases.append((DEBIAS, debias_artifact, stage_energy(debias_artifact, models=world.models),
                      ("shape", "color")))
        for program, artifact, energy, attrs in cases:
            with _item(f"exactness: '{program}', flow / flow+sir / flow+imh against a long SIR "
                       "reference"):
                ref = reference(world, energy, 16384 if quick else 262144, args.seed + 71,
                                attrs=attrs)
                runs = {"flow": {}, "flow+sir": {"pool": 4 * n},
                        "flow+imh": {"chains": 8, "burn_in": 16}}
                if program == RARE and not quick:
                    runs["rejection"] = {"max_proposals": 64 * n}
                record = {"reference_pool": ref["pool"], "reference_ess": ref["ess"],
                          "samplers": {}}
                for name, extra in runs.items():
                    source = artifact if name.startswith("flow") else world.generator
                    result = sample(name, source, energy, n=2 * n, seed=args.seed + 81, **extra)
                    joint = world.joint(world.labels(result.images), attrs)
                    record["samplers"][name] = {"kl": round(_kl(joint, ref["joint"]), 4),
                                                "tv": round(_tv(joint, ref["joint"]), 4),
                                                "samples": len(result.images)}
                    _log(f"  {program!r} {name:10s} {record['samplers'][name]}")
            out["exactness"][program] = record

    out["missing"]["gpu"] = ("the GPU figures (StyleGAN2-1024 + CLIP ViT-B-32) come from "
                             "benchmarks/gpu.py on a lent GPU machine")
    out["settings"]["wall_seconds"] = round(time.perf_counter() - began_all, 1)
    print_table(out)
    if args.json:
        from energyql.io import write_json

        write_json(args.json, out)
    return out


def _with_error(value, error) -> str:
    return str(value) if error is None else f"{value} ± {error}"


def print_table(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120, stderr=True)
    if "images_to_target" in out:
        table = Table(title="1. images decoded until the goal holds (defaults, truth-judged)")
        for column in ("program", "goal", "images to target", "budget", "final", "at end",
                       "met", "max drift (TV)", "ESS/N", "KL̂", "train s"):
            table.add_column(column, justify="right")
        for record in out["images_to_target"].values():
            figure = record["figure"]
            goal = f"{figure} {'>=' if figure == 'share' else '<='} {record['threshold']}"
            if record.get("kl_threshold") is not None:
                goal += f", kl <= {record['kl_threshold']}"
            reached = record["images_to_target"]
            table.add_row(record["program"], goal, f"{reached:,}" if reached else "never",
                          f"{record['budget']:,}", f"{record['final'][figure]:.4f} at "
                          f"{record['final']['images']:,}", str(record["holds_at_end"]),
                          str(record["met"]), _with_error(record.get("max_drift"),
                                                          record.get("max_drift_se")),
                          str(record.get("ess_fraction")), str(record.get("kl_hat")),
                          str(record["train_seconds"]))
        console.print(table)
    if "overhead" in out:
        table = Table(title="2. sampling overhead of the flow")
        for column in ("generator", "batch", "generator img/s", "flow+generator img/s", "ratio"):
            table.add_column(column, justify="right")
        for name, o in out["overhead"].items():
            table.add_row(name, str(o["batch"]), f"{o['generator_images_per_s']:.0f}",
                          f"{o['flow_generator_images_per_s']:.0f}", f"{o['ratio']:.3f}")
        console.print(table)
    if "samplers" in out:
        table = Table(title=f"3. cost per distinct on-target sample: '{RARE}' "
                            f"(base share {out['base_on_target_share']:.3f})")
        for column in ("sampler", "samples/s", "on-target share", "on-target/s", "unique",
                       "flow speedup", "break-even"):
            table.add_column(column, justify="right")
        flow_rate = out["samplers"]["flow"]["on_target_per_s"]
        for name, s in out["samplers"].items():
            speedup = f"{flow_rate / s['on_target_per_s']:.1f}x" if s["on_target_per_s"] else "-"
            table.add_row(name, f"{s['samples_per_s']:.1f}", f"{s['on_target_share']:.3f}",
                          f"{s['on_target_per_s']:.2f}", str(s["unique"]), speedup,
                          str(out["break_even"].get(name, "")))
        console.print(table)
    for program, record in out.get("exactness", {}).items():
        table = Table(title=f"4. exactness: '{program}' vs SIR reference "
                            f"(pool {record['reference_pool']}, ESS {record['reference_ess']})")
        for column in ("sampler", "KL", "TV"):
            table.add_column(column, justify="right")
        for name, s in record["samplers"].items():
            table.add_row(name, f"{s['kl']:.4f}", f"{s['tv']:.4f}")
        console.print(table)
    for what, why in out.get("missing", {}).items():
        console.print(f"not measured: {what}: {why}")
    console.print(f"wall time {out['settings']['wall_seconds']} s, "
                  f"{out['settings']['threads']} thread(s)")


if __name__ == "__main__":
    main()
