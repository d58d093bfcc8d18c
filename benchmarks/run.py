"""energyql's benchmark suite on the shapes world (CPU): every figure a ratio measured in one run.

    python benchmarks/run.py --quick [--json PATH] [--threads 1] [--plot PATH]
    python benchmarks/run.py          [--json PATH]          # the full run (longer)

1. overhead       images/s of the generator alone vs flow -> generator, batch 64 (shapes, and a
                  random-weight StyleGAN2 at 256 px)
2. speed          cost per on-target sample for a rare target (a blue triangle) of every
                  sampler in energyql.baselines, and the break-even sample count when the
                  flow's training time is counted
3. time_to_target training steps and seconds until each acceptance run of the core issue meets
                  its target, and the de-biasing KL against steps (a plot)
4. exactness      KL / TV of attribute distributions to the exact target (a long SIR reference)
                  of flow, flow+sir and flow+imh

JSON keys (stable): ``settings``, ``flow_overhead`` (shapes: flow+generator time over generator
time), ``flow_overhead_stylegan2_256``, ``overhead`` (details), ``speedup_vs_rejection``,
``speedup_vs_importance``, ``speedup_vs_langevin`` (each ``{"ratio", "on_target_share"}``, the
ratio of on-target samples per second, flow over the other, and every sampler's on-target
share), ``samplers`` (per sampler: ``seconds``, ``samples``, ``samples_per_s``,
``on_target_share``, ``on_target_per_s``, ``unique``, ``stats``), ``train_seconds``,
``break_even`` (on-target samples after which training plus flow sampling is cheaper),
``time_to_target``, ``exactness``, ``missing`` (what could not be measured, and why).

The GPU benchmark of the issue (StyleGAN2-1024 + CLIP ViT-B-32) is not part of this script.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

RARE = "shape == triangle & color == blue"
RARE_VALUES = {"shape": "triangle", "color": "blue"}
DEBIAS = "uniform(shape x color)"
RED_CIRCLES = "color == red & shape == circle"
CLIP_THEN_DEBIAS = 'clip("a blue triangle") | then debias(size)'
# Checkpoints at which training is evaluated. Each is a multiple of the checkpoint period
# (CHECKPOINT_EVERY, so that the next chunk resumes from it) and none but the last a multiple of
# the trainer's refit period (50: a chunk that ended on one would skip that refit), so training
# in these chunks retraces an uninterrupted run exactly; the learning-rate schedule is held to
# the whole run's length (see train_in_chunks).
EVAL_AT = (40, 140, 240, 340, 400)
CHECKPOINT_EVERY = 20


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
            parts = [self.models.attributes(images[i:i + batch]) for i in range(0, len(images), batch)]
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


def train_in_chunks(world: World, program: str, steps: tuple[int, ...], measure, *,
                    base_config, workdir: Path) -> tuple[list, list[dict], float]:
    """Train every stage of ``program`` in chunks; measure after each. Return the samplers,
    the trajectory (``stage``, ``step``, ``seconds``, figures) and the training seconds."""
    from energyql.energies import lower_stage
    from energyql.lang.api import compile as compile_program
    from energyql.trainer import train_stage

    import energyql.trainer as trainer

    compiled = compile_program(program, gen="shapes")
    sampler, trajectory, total = world.generator, [], 0.0
    samplers = []
    # The cosine learning rate is a function of (step, config.steps): a chunk that stops at
    # `end` must still follow the schedule of the whole run of steps[-1] steps.
    schedule = trainer.learning_rate
    whole_run = lambda config, step: schedule(replace(config, steps=steps[-1]), step)  # noqa: E731
    for index, stage in enumerate(compiled.stages, start=1):
        energy = lower_stage(stage, world.models)
        seconds = 0.0
        for end in steps:
            config = replace(base_config, steps=end)
            began = time.perf_counter()
            trainer.learning_rate = whole_run
            try:
                stage_sampler, _ = train_stage(sampler, energy, config, index=index,
                                               source=str(stage), checkpoint_dir=workdir,
                                               resume=True, progress=False)
            finally:
                trainer.learning_rate = schedule
            seconds += time.perf_counter() - began
            figures = measure(stage_sampler, index)
            trajectory.append({"stage": index, "step": end, "seconds": round(seconds, 2), **figures})
            _log(f"  {program!r} stage {index} step {end}: {figures} ({seconds:.0f} s)")
        total += seconds
        sampler = stage_sampler
        samplers.append((stage_sampler, energy))
    return samplers, trajectory, total


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
            images = world.generator.decode(torch.randn(m, world.generator.latent_dim, generator=rng))
            lp = world.models.attributes(images)
            features = Features(images, lambda _: lp, rng)  # the classifier runs once per batch
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
        share = float(world.on_target(labels).float().mean()) if len(result.images) else 0.0
        unique = int(result.latents.unique(dim=0).shape[0]) if len(result.latents) else 0
        results[name] = {
            "seconds": round(seconds, 3), "samples": len(result.images),
            "samples_per_s": round(len(result.images) / seconds, 2),
            "on_target_share": round(share, 4),
            "on_target_per_s": round(share * len(result.images) / seconds, 3),
            "unique": unique, "options": extra,
            "stats": {k: v for k, v in result.stats.items() if k not in ("sampler",)},
            "joint": world.joint(labels),
        }
        _log(f"  {name:10s} {seconds:8.2f} s  share {share:.3f}  unique {unique}  "
             f"{ {k: v for k, v in result.stats.items() if k in ('acceptance_rate', 'ess_fraction', 'proposals')} }")
    return results


def plot_curves(path: Path, title: str, curves: dict[str, list[tuple[float, float]]],
                ylabel: str) -> None:
    """Write a small line plot (PIL; no plotting library is a dependency)."""
    from PIL import Image, ImageDraw

    width, height, left, top, bottom = 560, 300, 60, 30, 40
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((left, 8), title, fill="black")
    xs = [x for c in curves.values() for x, _ in c]
    ys = [y for c in curves.values() for _, y in c]
    x_max, y_max = max(xs), max(max(ys), 1e-6)
    w, h = width - left - 20, height - top - bottom
    draw.line([left, top, left, top + h, left + w, top + h], fill="black")
    for frac in (0, 0.5, 1):
        draw.text((4, top + h - frac * h - 6), f"{frac * y_max:.3g}", fill="black")
        draw.text((left + frac * w - 10, top + h + 6), f"{frac * x_max:.0f}", fill="black")
    draw.text((left + w // 2 - 20, height - 16), "training step", fill="black")
    draw.text((left + 4, top + 2), ylabel, fill="black")
    colours = ["#1f5fbf", "#bf5f1f", "#2f9f4f", "#8f2fbf"]
    for (label, curve), colour in zip(curves.items(), colours):
        points = [(left + x / x_max * w, top + h - y / y_max * h) for x, y in curve]
        draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        draw.text(points[-1], f" {label}", fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the < 10 minute run")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--plot", type=Path, default=None, help="write the KL-vs-steps plot here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generator-weights", type=Path, default=None,
                        help="another shapes generator.safetensors (default: the shipped one)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=("overhead", "stylegan2", "speed", "time_to_target", "exactness"))
    args = parser.parse_args(argv)

    import torch

    from energyql.trainer import TrainConfig

    torch.set_num_threads(args.threads)
    quick = args.quick
    n = 512 if quick else 2048
    began_all = time.perf_counter()
    out: dict = {"settings": {"quick": quick, "threads": args.threads, "seed": args.seed,
                              "torch": torch.__version__, "samples_per_sampler": n,
                              "rare_target": RARE},
                 "missing": {}}
    world = World(args.generator_weights)
    base_config = TrainConfig(steps=EVAL_AT[-1], batch=64, lr=1e-3, seed=args.seed, clip_copies=8,
                              checkpoint_every=CHECKPOINT_EVERY)
    out["settings"]["train"] = {k: v for k, v in base_config.to_dict().items()
                                 if k in ("steps", "batch", "lr", "blocks", "width", "refit_every")}
    out["settings"]["eval_at"] = list(EVAL_AT)

    # Base share of the rare target (the rejection sampler's acceptance depends on it).
    base_labels = _flow_labels(world, world.generator, 4096 if quick else 16384, args.seed + 11)
    base_share = float(world.on_target(base_labels).float().mean())
    out["base_on_target_share"] = round(base_share, 4)
    _log(f"base share of '{RARE}': {base_share:.4f}")

    workdir = Path(tempfile.mkdtemp(prefix="energyql-bench-"))
    trajectories: dict = {}

    def share_of(sampler, _index):
        labels = _flow_labels(world, sampler, 256 if quick else 2048, args.seed + 21)
        return {"on_target_share": round(float(world.on_target(labels).float().mean()), 4)}

    _log(f"training '{RARE}' ({EVAL_AT[-1]} steps, evaluated at {EVAL_AT})")
    [(rare_sampler, rare_energy)], trajectories[RARE], rare_seconds = train_in_chunks(
        world, RARE, EVAL_AT, share_of, base_config=base_config, workdir=workdir / "rare")
    out["train_seconds"] = round(rare_seconds, 2)
    from energyql.sampler import Artifact

    rare_artifact = Artifact(rare_sampler.eval(), {})

    if "overhead" not in args.skip:
        _log("overhead: shapes, batch 64")
        out["overhead"] = {"shapes": overhead(world.generator, rare_sampler.flow, 64,
                                              15 if quick else 50)}
        out["flow_overhead"] = out["overhead"]["shapes"]["ratio"]
        if "stylegan2" not in args.skip:
            # ~1.5 s per 256 px image on one contested core: the quick run uses a small batch
            # (the flow's share of the time only shrinks as the batch grows).
            batch, repeats = (4, 3) if quick else (64, 2)
            _log(f"overhead: StyleGAN2 256 px random weights, batch {batch}")
            out["overhead"]["stylegan2_256"] = stylegan2_overhead(batch, repeats)
            out["flow_overhead_stylegan2_256"] = out["overhead"]["stylegan2_256"]["ratio"]

    if "speed" not in args.skip:
        _log(f"speed: {n} samples per sampler, target '{RARE}'")
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
        out["samplers"] = run_samplers(world, rare_artifact, rare_energy, counts, args.seed + 31,
                                       options)
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
            out["break_even"][other] = round(rare_seconds / gap) if 0 < gap < math.inf else None

    if "time_to_target" not in args.skip:
        def kl_shape_color(sampler, _index):
            labels = _flow_labels(world, sampler, 512 if quick else 2048, args.seed + 41)
            joint = world.joint(labels, ("shape", "color"))
            return {"kl_to_uniform": round(_kl(joint, [1 / 9] * 9), 4)}

        _log(f"time to target: '{DEBIAS}'")
        debias_runs, trajectories[DEBIAS], debias_seconds = train_in_chunks(
            world, DEBIAS, EVAL_AT, kl_shape_color, base_config=base_config,
            workdir=workdir / "debias")
        if not quick:
            def red_circles(sampler, _index):
                labels = _flow_labels(world, sampler, 2048, args.seed + 51)
                hits = world.on_target(labels, {"color": "red", "shape": "circle"})
                return {"on_target_share": round(float(hits.float().mean()), 4)}

            _log(f"time to target: '{RED_CIRCLES}'")
            _, trajectories[RED_CIRCLES], _ = train_in_chunks(
                world, RED_CIRCLES, EVAL_AT, red_circles, base_config=base_config,
                workdir=workdir / "red")
            try:
                def clip_debias(sampler, index):
                    labels = _flow_labels(world, sampler, 2048, args.seed + 61)
                    figures = {"blue_triangle_share": round(float(world.on_target(labels).float().mean()), 4)}
                    if index == 2:
                        size = world.joint(labels, ("size",))
                        figures["size_kl_to_uniform"] = round(_kl(size, [0.5, 0.5]), 4)
                    return figures

                _log(f"time to target: '{CLIP_THEN_DEBIAS}'")
                _, trajectories[CLIP_THEN_DEBIAS], _ = train_in_chunks(
                    world, CLIP_THEN_DEBIAS, EVAL_AT, clip_debias, base_config=base_config,
                    workdir=workdir / "clip")
            except Exception as error:  # noqa: BLE001 - the CLIP weights may not exist yet
                out["missing"]["time_to_target " + CLIP_THEN_DEBIAS] = f"{type(error).__name__}: {error}"
        else:
            out["missing"]["time_to_target " + RED_CIRCLES] = "full run only"
            out["missing"]["time_to_target " + CLIP_THEN_DEBIAS] = "full run only"
        targets = {RARE: ("on_target_share", 0.9, max), DEBIAS: ("kl_to_uniform", 0.05, min),
                   RED_CIRCLES: ("on_target_share", 0.9, max)}
        out["time_to_target"] = {}
        for program, trajectory in trajectories.items():
            record = {"trajectory": trajectory}
            if program in targets:
                key, goal, _ = targets[program]
                met = [t for t in trajectory if (t[key] >= goal if key == "on_target_share" else t[key] <= goal)]
                record.update(goal={key: goal}, reached_at_step=met[0]["step"] if met else None,
                              reached_after_seconds=met[0]["seconds"] if met else None)
            out["time_to_target"][program] = record
        if args.plot:
            curves = {DEBIAS: [(t["step"], t["kl_to_uniform"]) for t in trajectories[DEBIAS]]}
            clip_runs = trajectories.get(CLIP_THEN_DEBIAS, [])
            if any(t["stage"] == 2 for t in clip_runs):
                curves["debias(size), stage 2"] = [(t["step"], t["size_kl_to_uniform"])
                                                   for t in clip_runs if t["stage"] == 2]
            plot_curves(args.plot, "de-biasing: KL of the attribute distribution to uniform",
                        curves, "KL")

    if "exactness" not in args.skip:
        _log("exactness: flow / flow+sir / flow+imh against a long SIR reference")
        out["exactness"] = {}
        ref = reference(world, rare_energy, 16384 if quick else 262144, args.seed + 71)
        cases = [(RARE, rare_artifact, rare_energy, ("shape", "color", "size"), ref)]
        if "time_to_target" not in args.skip:
            (debias_sampler, debias_energy), = debias_runs
            ref_debias = reference(world, debias_energy, 16384 if quick else 131072,
                                   args.seed + 72, attrs=("shape", "color"))
            cases.append((DEBIAS, Artifact(debias_sampler.eval(), {}), debias_energy,
                          ("shape", "color"), ref_debias))
        else:
            out["missing"]["exactness " + DEBIAS] = "needs the time_to_target training"
        for program, artifact, energy, attrs, ref in cases:
            runs = {"flow": {}, "flow+sir": {"pool": 4 * n}, "flow+imh": {"chains": 8, "burn_in": 16}}
            if program == RARE and not quick:
                runs["rejection"] = {"max_proposals": 64 * n}
            record = {"reference_pool": ref["pool"], "reference_ess": ref["ess"], "samplers": {}}
            from energyql.baselines import sample

            for name, extra in runs.items():
                source = artifact if name.startswith("flow") else world.generator
                result = sample(name, source, energy, n=2 * n, seed=args.seed + 81, **extra)
                joint = world.joint(world.labels(result.images), attrs)
                record["samplers"][name] = {"kl": round(_kl(joint, ref["joint"]), 4),
                                            "tv": round(_tv(joint, ref["joint"]), 4),
                                            "samples": len(result.images)}
                _log(f"  {program!r} {name:10s} {record['samplers'][name]}")
            out["exactness"][program] = record

    out["missing"]["gpu"] = ("item 5 (StyleGAN2-1024 + CLIP ViT-B-32 on a GPU) is not run by "
                             "this CPU script")
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    out["settings"]["wall_seconds"] = round(time.perf_counter() - began_all, 1)
    print_table(out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return out


def print_table(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    if "overhead" in out:
        table = Table(title="1. sampling overhead of the flow")
        for column in ("generator", "batch", "generator img/s", "flow+generator img/s", "ratio"):
            table.add_column(column, justify="right")
        for name, o in out["overhead"].items():
            table.add_row(name, str(o["batch"]), f"{o['generator_images_per_s']:.0f}",
                          f"{o['flow_generator_images_per_s']:.0f}", f"{o['ratio']:.3f}")
        console.print(table)
    if "samplers" in out:
        table = Table(title=f"2. cost per on-target sample: '{RARE}' "
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
    for program, record in out.get("time_to_target", {}).items():
        console.print(f"3. '{program}': goal {record.get('goal')}, reached at step "
                      f"{record.get('reached_at_step')} after {record.get('reached_after_seconds')} s")
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
