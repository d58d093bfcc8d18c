"""energyql on a GPU: timings at real sizes and cuda smoke checks, in one bounded run.

    python3 benchmarks/gpu.py --device cuda --out gpu.json          # on the GPU machine (< 6 min)
    python3 benchmarks/gpu.py --device cpu --tiny --out /tmp/g.json  # dry run at tiny sizes

Sections (each in its own try/except: one failure does not lose the others; the JSON is
rewritten after every section, so a run killed by a timeout keeps what it had measured):

1. ``env``        torch, CUDA, device name and capability, TF32 flags, package versions.
2. ``stylegan2``  a random-weight StyleGAN2 (FFHQ config-f: 1024 px, latent 512, 8 mapping
                  layers), a random-weight CLIP ViT-B-32 (open_clip, QuickGELU as the
                  ``ViT-B-32:openai`` default of the faces world) wrapped in energyql's
                  ClipModel and lowered through ``lower_stage`` from ``clip("...")``, and the
                  default latent flow (8 blocks, width 256). One training step, the trainer's
                  own (``StageObjective``: flow, generator, CLIP energy on 16 augmented copies,
                  the estimator's terms at their defaults; then the loop's ``_optimise``:
                  backward, grad clip, AdamW) at batch 8, fp32 and bf16 autocast: median
                  ms/step over timed steps after warm-ups, a phase split, the estimator's parts
                  that ran, and ``torch.cuda.max_memory_allocated``; then ``train_stage`` itself
                  for a few steps as a cross-check; generator-only sampling throughput (batch
                  32, no grad); flow+generator overhead; and an artifact saved, loaded with
                  ``energyql.sampler.load`` and sampled.
3. ``shapes``     ``python3 -m energyql run 'color == red & shape == circle' --gen shapes
                  --device DEV`` as a subprocess (wall time, training time, predicate share of
                  metrics.json), then the same with ``--amp``.
4. ``determinism`` the same short shapes training (50 steps) twice on the device: are the flow
                  parameters identical? (max abs diff; informational), the same with bf16
                  autocast, and the device against the CPU.

``--tiny`` shrinks everything (64 px StyleGAN2, batch 2, 2 copies, 20 shapes steps, 200
evaluation samples) so that the whole script runs on one CPU thread in a few minutes.
The trainer autocasts on CUDA only, so on the CPU the bf16 training steps run in float32.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

SHAPES_EXPRESSION = "color == red & shape == circle"
CLIP_EXPRESSION = 'clip("a photo of a smiling person")'
T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:6.1f}s] {message}", flush=True)


class Context:
    """Settings shared by the sections, and the time budget."""

    def __init__(self, args):
        self.device = args.device
        self.cuda = args.device.startswith("cuda")
        self.tiny = args.tiny
        self.deadline = T0 + args.budget
        self.scratch = Path(tempfile.mkdtemp(prefix="energyql-gpu-"))

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def autocast(self, amp: bool):
        """bf16 autocast as the trainer does it (on CPU only in --tiny, to exercise the path)."""
        if not amp:
            return contextlib.nullcontext()
        return torch.autocast("cuda" if self.cuda else "cpu", dtype=torch.bfloat16)

    def reset_memory(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_memory_gib(self):
        return round(torch.cuda.max_memory_allocated() / 2**30, 3) if self.cuda else None


def timed(fn, ctx: Context, warmup: int, repeat: int) -> list[float]:
    """Return the wall times (s) of ``repeat`` calls after ``warmup`` calls, synchronised."""
    for _ in range(warmup):
        fn()
    ctx.sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        ctx.sync()
        times.append(time.perf_counter() - start)
    return times


def ms(seconds: float) -> float:
    return round(1000 * seconds, 2)


# --- 1. environment -----------------------------------------------------------------------------


def section_env(ctx: Context) -> dict:
    from importlib import metadata

    result = {"python": platform.python_version(), "torch": torch.__version__,
              "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
              "device": ctx.device, "threads": torch.get_num_threads(),
              "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
              "tf32_cudnn": torch.backends.cudnn.allow_tf32,
              "float32_matmul_precision": torch.get_float32_matmul_precision()}
    versions = {}
    for name in ("numpy", "scipy", "open_clip_torch", "timm", "FrEIA", "lark", "ftfy", "wcwidth",
                 "facenet-pytorch", "safetensors", "typer", "rich", "torchvision"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    result["versions"] = versions
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        result.update(name=torch.cuda.get_device_name(ctx.device),
                      capability=".".join(map(str, torch.cuda.get_device_capability(ctx.device))),
                      multiprocessors=props.multi_processor_count,
                      memory_gib=round(props.total_memory / 2**30, 1),
                      cudnn=torch.backends.cudnn.version())
    else:
        result["name"] = platform.processor() or platform.machine()
    return result


# --- 2. StyleGAN2 + CLIP ViT-B-32 + flow ----------------------------------------------------------


def _stylegan2(ctx: Context):
    from energyql.generators.stylegan2 import StyleGAN2, StyleGAN2Generator

    torch.manual_seed(0)
    if ctx.tiny:
        config = dict(size=64, style_dim=64, n_mlp=2,
                      channels={4: 64, 8: 64, 16: 32, 32: 16, 64: 8})
    else:
        config = dict(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2)  # FFHQ config-f
    net = StyleGAN2(**config)
    # Random weights as the constructor draws them (equalised learning rate keeps activations
    # of order one); truncation 1.0 and fixed noise, as training runs.
    generator = StyleGAN2Generator(net, truncation=1.0, mean_samples=1024, id="stylegan2-random",
                                   catalog="faces").to(ctx.device)
    return generator, {k: v for k, v in config.items() if k != "channels"}


def _clip_energy(ctx: Context, copies: int):
    """The CLIP energy of ``CLIP_EXPRESSION`` as ``lower_stage`` builds it, over a random
    ViT-B-32."""
    import open_clip

    from energyql.controls.clip import ClipModel
    from energyql.energies import ControlModels, lower_stage
    from energyql.lang.api import compile as compile_program

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", force_quick_gelu=True, device=ctx.device)
    cfg = dict(model.visual.preprocess_cfg)
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    clip = ClipModel(model, open_clip.get_tokenizer("ViT-B-32"), name="ViT-B-32:random",
                     image_size=size, mean=cfg["mean"], std=cfg["std"]).to(ctx.device)

    class Models(ControlModels):
        def clip(self, spec):  # the world's default CLIP, with random weights
            return clip

    models = Models("faces", device=ctx.device, clip_copies=copies)
    program = compile_program(CLIP_EXPRESSION, gen="faces")
    energy = lower_stage(program.stages[0], models).to(ctx.device)
    params = sum(p.numel() for p in model.parameters())
    return energy, {"clip_params_m": round(params / 1e6, 1), "clip_image_size": size,
                    "copies": copies}


def _step_config(ctx, *, batch: int, amp: bool, steps: int):
    """The TrainConfig of both step measurements: the default latent flow (8 blocks × 256),
    lr 1e-4, AdamW's weight decay 1e-4, grad clip 10, the estimator (score climbing, ...) at
    the trainer's defaults; no λ refits, checkpoints or closeness measurement."""
    from energyql.training import TrainConfig

    return TrainConfig(steps=steps, batch=batch, lr=1e-4, weight_decay=1e-4, grad_clip=10.0,
                       device=ctx.device, amp=amp, blocks=8, width=256, refit_every=0,
                       checkpoint_every=10**9, closeness_samples=0)


@contextlib.contextmanager
def _call_marks(ctx: Context, obj, name: str, marks: list):
    """Append ``(name, time)`` to ``marks`` each time ``obj.name`` returns (synchronised),
    while the block runs; the method is the class's own again afterwards."""
    method = getattr(obj, name)

    def marked(*args, **kwargs):
        out = method(*args, **kwargs)
        ctx.sync()
        marks.append((name, time.perf_counter()))
        return out

    setattr(obj, name, marked)
    try:
        yield
    finally:
        delattr(obj, name)


def _train_step_timing(ctx, generator, energy, *, batch: int, amp: bool, warmup: int,
                       repeat: int) -> dict:
    """Time the trainer's own step with a phase split.

    The stage is built as ``train_stage`` builds it (``build_stage``, ``StageObjective``), and
    a step is the loop's: ``loss, parts = objective(step)``, then ``_optimise`` (backward,
    grad clip, AdamW). The split marks when the generator's ``decode`` and the energy's
    ``parts`` return: flow+generator up to the last decode before the energy is judged,
    energy up to ``parts`` (the control models run there: ``features`` is lazy), the
    estimator's other terms (prior, the flow's densities for score climbing, ...) up to the
    loss, then backward+step. Each mark synchronises the device, as the totals do.
    """
    from energyql.distributed import current
    from energyql.training import StageObjective
    from energyql.training.loop import _optimise, build_stage

    ctx.reset_memory()
    config = _step_config(ctx, batch=batch, amp=amp, steps=warmup + repeat)
    run = build_stage(generator, energy, config, 1, CLIP_EXPRESSION, current())
    objective = StageObjective(run.target, config, 1, run.group)
    before = [p.detach().clone() for p in run.flow.parameters()]
    phases: dict[str, list[float]] = {"flow+generator": [], "energy": [], "estimator": [],
                                      "backward+step": []}
    totals: list[float] = []
    losses: list[float] = []
    marks: list[tuple[str, float]] = []  # (method, when it returned) in this step
    estimator: list[str] = []
    bad_in_a_row = 0
    with _call_marks(ctx, run.target.base, "decode", marks), \
            _call_marks(ctx, run.energy, "parts", marks):
        for step in range(warmup + repeat):
            marks.clear()
            ctx.sync()
            t0 = time.perf_counter()
            loss, parts = objective(step)
            ctx.sync()
            t1 = time.perf_counter()
            bad_in_a_row = _optimise(run, loss, parts, step, bad_in_a_row)
            ctx.sync()
            t2 = time.perf_counter()
            losses.append(float("nan") if bad_in_a_row else float(loss.detach()))
            estimator = sorted(parts.losses)
            if step < warmup:
                continue
            names = [n for n, _ in marks]
            judged = names.index("parts")
            decoded = max(i for i, n in enumerate(names[:judged]) if n == "decode")
            phases["flow+generator"].append(marks[decoded][1] - t0)
            phases["energy"].append(marks[judged][1] - marks[decoded][1])
            phases["estimator"].append(t1 - marks[judged][1])
            phases["backward+step"].append(t2 - t1)
            totals.append(t2 - t0)
    moved = max(float((p.detach() - b).abs().max()) for p, b in zip(run.flow.parameters(),
                                                                      before))
    return {"batch": batch, "amp_bf16": amp, "autocast": amp and ctx.cuda,
            "warmup": warmup, "timed_steps": repeat, "estimator_parts": estimator,
            "ms_per_step_median": ms(statistics.median(totals)),
            "ms_per_step_min": ms(min(totals)),
            "phases_ms_median": {k: ms(statistics.median(v)) for k, v in phases.items()},
            "images_per_s": round(batch / statistics.median(totals), 2),
            "finite_losses": sum(x == x for x in losses), "steps": len(losses),
            "skipped_steps": run.log.skipped_steps, "last_loss": round(losses[-1], 4),
            "flow_params_max_change": moved, "max_memory_gib": ctx.peak_memory_gib()}


def _components_alone(ctx, generator, energy, *, batch: int, amp: bool, warmup: int,
                      repeat: int) -> dict:
    """Generator forward+backward and CLIP energy forward+backward, timed alone (no flow, no
    optimiser, no loss bookkeeping): the floor a training step cannot go under."""
    g = torch.Generator().manual_seed(7)

    def once():
        z = torch.randn(batch, generator.latent_dim, generator=g).to(ctx.device)
        z.requires_grad_(True)
        images = generator.decode(z).float()
        with ctx.autocast(amp):
            total = torch.stack(list(energy.parts(energy.features(images, g)).values())).sum(0)
        total.sum().backward()

    times = timed(once, ctx, warmup, repeat)
    return {"batch": batch, "amp_bf16": amp, "ms_median": ms(statistics.median(times))}


def _energy_split(ctx, clip, *, batch: int, copies: int, size: int, amp: bool, warmup: int,
                  repeat: int) -> dict:
    """Where the CLIP energy's time goes: augmenting at the generator's size, then CLIP (which
    resizes to its own size), against resizing first and augmenting at CLIP's size."""
    import torch.nn.functional as F

    from energyql.controls.augment import augment

    images = torch.rand(batch, 3, size, size, device=ctx.device, requires_grad=True)
    options = clip.augment_options

    def augment_only():
        views = augment(images, copies, generator=torch.Generator().manual_seed(0), **options)
        views.sum().backward()

    def energy_path(resize_first: bool):
        def run():
            x = images
            if resize_first:
                x = F.interpolate(x, size=(clip.image_size, clip.image_size), mode="bilinear",
                                  align_corners=False, antialias=True)
            views = augment(x, copies, generator=torch.Generator().manual_seed(0), **options)
            with ctx.autocast(amp):
                embedding = clip.encode_image(views)
            embedding.sum().backward()
        return run

    ctx.reset_memory()
    result = {"batch": batch, "copies": copies, "image_size": size, "amp_bf16": amp,
              "augment_fwd_bwd_ms": ms(statistics.median(timed(augment_only, ctx, warmup, repeat)))}
    result["augment_then_clip_fwd_bwd_ms"] = ms(statistics.median(
        timed(energy_path(False), ctx, warmup, repeat)))
    result["max_memory_gib_as_trained"] = ctx.peak_memory_gib()
    ctx.reset_memory()
    result["resize_then_augment_then_clip_fwd_bwd_ms"] = ms(statistics.median(
        timed(energy_path(True), ctx, warmup, repeat)))
    result["max_memory_gib_resize_first"] = ctx.peak_memory_gib()
    return result


def _train_stage_crosscheck(ctx, generator, energy, *, batch: int, amp: bool, steps: int) -> dict:
    """Run the real ``train_stage`` for a few steps with the settings the step timing used:
    mean seconds per step (its λ fits and start are not counted), finite losses."""
    from energyql.training import train_stage

    ctx.reset_memory()
    config = _step_config(ctx, batch=batch, amp=amp, steps=steps)
    start = time.perf_counter()
    sampler, stage_log = train_stage(generator, energy, config, index=1, source=CLIP_EXPRESSION,
                                     progress=False)
    ctx.sync()
    return {"amp_bf16": amp, "steps": stage_log.steps, "skipped_steps": stage_log.skipped_steps,
            "ms_per_step_mean": ms(stage_log.seconds / max(1, stage_log.steps)),
            "wall_s": round(time.perf_counter() - start, 2),
            "losses_finite": all(x == x for x in stage_log.loss),
            "max_memory_gib": ctx.peak_memory_gib()}


def _sampling(ctx, generator, *, batch: int, amp: bool, warmup: int, repeat: int) -> dict:
    ctx.reset_memory()

    def draw():
        with torch.no_grad(), ctx.autocast(amp):
            z = torch.randn(batch, generator.latent_dim, device=ctx.device)
            generator.decode(z)

    times = timed(draw, ctx, warmup, repeat)
    return {"batch": batch, "amp_bf16": amp, "ms_per_batch_median": ms(statistics.median(times)),
            "images_per_s": round(batch / statistics.median(times), 2),
            "max_memory_gib": ctx.peak_memory_gib()}


def _artifact_sampling(ctx, generator, *, batch: int, n: int, warmup: int, repeat: int) -> dict:
    """Flow+generator vs generator alone, and a saved artifact loaded and sampled."""
    from energyql.flows import FlowConfig, LatentFlow
    from energyql.sampler import Artifact, StageSampler, load, manifest_for

    flow = LatentFlow(FlowConfig(dim=generator.latent_dim, blocks=8, width=256, seed=1))
    # A trained flow is not the identity: give the zero-initialised last layers some weight.
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if name.endswith(("subnet.4.weight", "subnet.4.bias")):
                p.normal_(0, 0.01)
    sampler = StageSampler(generator, flow.to(ctx.device), 1, CLIP_EXPRESSION).eval()
    eps = torch.randn(batch, generator.latent_dim, device=ctx.device)

    def gen_only():
        with torch.no_grad():
            generator.decode(eps)

    def with_flow():
        with torch.no_grad():
            sampler.decode(eps)

    gen_t = statistics.median(timed(gen_only, ctx, warmup, repeat))
    flow_t = statistics.median(timed(with_flow, ctx, warmup, repeat))
    out = ctx.scratch / "artifact"
    Artifact(sampler, manifest_for(sampler, source=CLIP_EXPRESSION)).save(out)
    start = time.perf_counter()
    artifact = load(out, gen=generator, device=ctx.device)
    load_s = time.perf_counter() - start
    artifact.sample(batch, seed=0, batch_size=batch)  # warm-up
    ctx.sync()
    start = time.perf_counter()
    images = artifact.sample(n, seed=0, batch_size=batch)
    ctx.sync()
    artifact_s = time.perf_counter() - start
    start = time.perf_counter()
    generator.sample(n, seed=0, batch_size=batch)
    ctx.sync()
    base_s = time.perf_counter() - start
    same = torch.equal(images, sampler.sample(n, seed=0, batch_size=batch))
    return {"batch": batch, "gen_decode_ms": ms(gen_t), "flow_gen_decode_ms": ms(flow_t),
            "flow_overhead": round(flow_t / gen_t, 4),
            "artifact_load_s": round(load_s, 3), "artifact_sample_n": n,
            "artifact_images_per_s_incl_cpu_copy": round(n / artifact_s, 2),
            "generator_sample_images_per_s_incl_cpu_copy": round(n / base_s, 2),
            "artifact_sample_matches_in_memory_sampler": same,
            "images_finite": bool(torch.isfinite(images).all()),
            "image_shape": list(images.shape)}


def section_stylegan2(ctx: Context) -> dict:
    tiny = ctx.tiny
    batch, copies = (2, 2) if tiny else (8, 16)
    warmup, repeat = (1, 2) if tiny else (3, 10)
    log("building the random StyleGAN2 and CLIP ViT-B-32")
    generator, config = _stylegan2(ctx)
    energy, clip_info = _clip_energy(ctx, copies)
    result: dict = {"generator": config, **clip_info,
                    "generator_params_m": round(
                        sum(p.numel() for p in generator.parameters()) / 1e6, 1)}
    for amp in (False, True):
        key = "train_step_bf16" if amp else "train_step_fp32"
        log(f"{key}: batch {batch}, {copies} copies, {warmup}+{repeat} steps")
        try:
            result[key] = _train_step_timing(ctx, generator, energy, batch=batch, amp=amp,
                                             warmup=warmup, repeat=repeat)
            log(f"  {result[key]['ms_per_step_median']} ms/step, "
                f"peak {result[key]['max_memory_gib']} GiB")
        except Exception as error:  # noqa: BLE001 (keep the other measurements)
            result[key] = {"error": _short(error)}
            log(f"  FAILED: {_short(error)}")
    for amp in (False, True):
        # The trainer's own overhead per step (issue 13): the step over what its generator and
        # CLIP forward+backward cost alone; the goal is 1.2 at most.
        key = "trainer_overhead_bf16" if amp else "trainer_overhead_fp32"
        step = result.get("train_step_bf16" if amp else "train_step_fp32", {})
        if "ms_per_step_median" not in step:
            continue
        log(f"{key}: generator + CLIP energy forward+backward alone, batch {batch}")
        try:
            alone = _components_alone(ctx, generator, energy, batch=batch, amp=amp,
                                      warmup=warmup, repeat=repeat)
            result[key] = {**alone, "step_ms_median": step["ms_per_step_median"],
                           "ratio": round(step["ms_per_step_median"] / alone["ms_median"], 3)}
            log(f"  step {step['ms_per_step_median']} ms over {alone['ms_median']} ms alone: "
                f"x{result[key]['ratio']}")
        except Exception as error:  # noqa: BLE001
            result[key] = {"error": _short(error)}
            log(f"  FAILED: {_short(error)}")
    for amp in (False, True):
        key = "energy_split_bf16" if amp else "energy_split_fp32"
        log(f"{key}: augment at {generator.image_size} px vs resize first")
        try:
            result[key] = _energy_split(ctx, energy.pointwise[0].clip, batch=batch, copies=copies,
                                        size=generator.image_size, amp=amp, warmup=1 if tiny else 2,
                                        repeat=2 if tiny else 5)
            r = result[key]
            log(f"  augment {r['augment_fwd_bwd_ms']} ms; augment+CLIP "
                f"{r['augment_then_clip_fwd_bwd_ms']} ms vs resize first "
                f"{r['resize_then_augment_then_clip_fwd_bwd_ms']} ms")
        except Exception as error:  # noqa: BLE001
            result[key] = {"error": _short(error)}
            log(f"  FAILED: {_short(error)}")
    for amp in (False, True):
        key = "train_stage_bf16" if amp else "train_stage_fp32"
        if ctx.left() < 200 and not tiny:
            result[key] = {"skipped": "time budget"}
            continue
        log(f"{key}: energyql.training.train_stage, {2 if tiny else 6} steps")
        try:
            result[key] = _train_stage_crosscheck(ctx, generator, energy, batch=batch, amp=amp,
                                                  steps=2 if tiny else 6)
            log(f"  {result[key]['ms_per_step_mean']} ms/step (mean, incl. first step)")
        except Exception as error:  # noqa: BLE001
            result[key] = {"error": _short(error)}
            log(f"  FAILED: {_short(error)}")
    del energy
    sample_batch = 4 if tiny else 32
    for amp in (False, True):
        key = "sample_bf16" if amp else "sample_fp32"
        log(f"{key}: generator only, batch {sample_batch}, no grad")
        try:
            result[key] = _sampling(ctx, generator, batch=sample_batch, amp=amp,
                                    warmup=1 if tiny else 2, repeat=2 if tiny else 5)
            log(f"  {result[key]['images_per_s']} images/s")
        except Exception as error:  # noqa: BLE001
            result[key] = {"error": _short(error)}
            log(f"  FAILED: {_short(error)}")
    log("artifact: flow+generator overhead, save/load/sample")
    try:
        result["artifact"] = _artifact_sampling(ctx, generator, batch=sample_batch,
                                                n=2 * sample_batch, warmup=1 if tiny else 2,
                                                repeat=2 if tiny else 5)
        log(f"  flow overhead x{result['artifact']['flow_overhead']}, artifact "
            f"{result['artifact']['artifact_images_per_s_incl_cpu_copy']} images/s")
    except Exception as error:  # noqa: BLE001
        result["artifact"] = {"error": _short(error)}
        log(f"  FAILED: {_short(error)}")
    return result


# --- 3. energyql run on the shapes world ----------------------------------------------------------


def _shapes_run(ctx: Context, amp: bool) -> dict:
    out = ctx.scratch / ("shapes-amp" if amp else "shapes-fp32")
    # -S passes through (a run that hides site-packages, as the wheel check does).
    command = [sys.executable, *(["-S"] if sys.flags.no_site else []), "-m", "energyql", "run",
               SHAPES_EXPRESSION, "--gen", "shapes",
               "--device", ctx.device, "--no-progress", "--out", str(out)]
    if amp:
        command.append("--amp")
    if ctx.tiny:
        command += ["--steps", "20", "--samples", "200", "--threads", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT),
                                           *filter(None, [os.environ.get("PYTHONPATH")])]))
    limit = max(30.0, min(170.0, ctx.left() - 60))
    log("$ python3 " + " ".join(command[1:]) + f"   (timeout {limit:.0f} s)")
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=str(ROOT), env=env, capture_output=True, text=True,
                              timeout=limit)
    except subprocess.TimeoutExpired as error:
        tail = (error.stdout or b"")[-1500:]
        return {"error": f"timed out after {limit:.0f} s", "output_tail": str(tail)}
    wall = time.perf_counter() - start
    result = {"command": " ".join(command[command.index("energyql") + 1:]),
              "returncode": done.returncode, "wall_s": round(wall, 2)}
    if done.returncode != 0:
        result["output_tail"] = (done.stdout + done.stderr)[-3000:]
        return result
    from energyql.manifest import Manifest

    metrics = json.loads((out / "metrics.json").read_text())
    stage = Manifest.read(out).stages[0]
    result.update(
        share_all=metrics["predicate_share"].get("all"),
        base_share_all=metrics.get("base", {}).get("predicate_share", {}).get("all"),
        shares=metrics["predicate_share"], samples=metrics.get("samples"),
        train_s=stage.train.seconds if stage.train else None,
        steps=stage.train.steps if stage.train else None,
        batch=stage.train.batch if stage.train else None,
        skipped_steps=stage.train.skipped_steps if stage.train else None,
        final_loss=stage.final_loss, ess=metrics.get("ess"))
    result["ms_per_train_step"] = ms(result["train_s"] / max(1, result["steps"]))
    return result


def section_shapes(ctx: Context) -> dict:
    result = {}
    for amp in (False, True):
        key = "amp" if amp else "fp32"
        if ctx.left() < 45:
            result[key] = {"skipped": "time budget"}
            continue
        try:
            result[key] = _shapes_run(ctx, amp)
            r = result[key]
            log(f"  {key}: wall {r.get('wall_s')} s, train {r.get('train_s')} s, "
                f"share {r.get('share_all')} (base {r.get('base_share_all')})"
                + (f", rc {r.get('returncode')}" if r.get("returncode") else "")
                + (f", {r['error']}" if "error" in r else ""))
        except Exception as error:  # noqa: BLE001
            result[key] = {"error": _short(error)}
            log(f"  {key} FAILED: {_short(error)}")
    return result


# --- 4. determinism -------------------------------------------------------------------------------


def _train_shapes(ctx: Context, device: str, amp: bool, steps: int):
    from energyql.training import TrainConfig, train_program
    from energyql.workflow import defaults_for

    settings = defaults_for("shapes")
    settings.update(steps=steps)
    if ctx.tiny:
        settings.update(batch=32)
    config = TrainConfig(device=device, amp=amp, seed=0, **settings)
    start = time.perf_counter()
    artifact = train_program(SHAPES_EXPRESSION, "shapes", config, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    flow = artifact.sampler.flow
    state = {k: v.detach().float().cpu() for k, v in flow.state_dict().items()}
    with torch.no_grad():
        eps = torch.randn(64, flow.dim, generator=torch.Generator().manual_seed(123)).to(device)
        images = artifact.sampler.decode(eps).float().cpu()
    return state, images, seconds, artifact.manifest.stages[0].final_loss


def _compare(a, b) -> dict:
    (sa, ia, _, la), (sb, ib, _, lb) = a, b
    diffs = [float((sa[k] - sb[k]).abs().max()) for k in sa]
    return {"identical": all(torch.equal(sa[k], sb[k]) for k in sa),
            "flow_params_max_abs_diff": max(diffs) if diffs else 0.0,
            "images_max_abs_diff": float((ia - ib).abs().max()),
            "final_losses": [la, lb]}


def section_determinism(ctx: Context) -> dict:
    steps = 10 if ctx.tiny else 50
    result: dict = {"steps": steps, "expression": SHAPES_EXPRESSION}
    log(f"shapes, {steps} steps on {ctx.device}, twice")
    first = _train_shapes(ctx, ctx.device, False, steps)
    second = _train_shapes(ctx, ctx.device, False, steps)
    result["same_device_fp32"] = {**_compare(first, second),
                                  "seconds": [round(first[2], 2), round(second[2], 2)]}
    log(f"  fp32: {result['same_device_fp32']}")
    if ctx.left() > 40:
        log("bf16 autocast, twice" + ("" if ctx.cuda else " (CPU: the trainer ignores --amp)"))
        a, b = (_train_shapes(ctx, ctx.device, True, steps) for _ in range(2))
        result["same_device_amp"] = {**_compare(a, b), "seconds": [round(a[2], 2), round(b[2], 2)]}
        result["amp_vs_fp32"] = _compare(first, a)
        log(f"  amp: {result['same_device_amp']}")
    if ctx.cuda and ctx.left() > 40:
        log("the same on the CPU")
        cpu = _train_shapes(ctx, "cpu", False, steps)
        result["device_vs_cpu_fp32"] = {**_compare(first, cpu), "cpu_seconds": round(cpu[2], 2)}
        log(f"  device vs cpu: {result['device_vs_cpu_fp32']}")
    return result


# --- driver ---------------------------------------------------------------------------------------


def _short(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"


SECTIONS = {"env": section_env, "stylegan2": section_stylegan2, "shapes": section_shapes,
            "determinism": section_determinism}


def _flatten(prefix: str, value, rows: list) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, rows)
    elif isinstance(value, list) and len(value) > 4:
        rows.append((prefix, f"[{len(value)} items]"))
    else:
        rows.append((prefix, value if isinstance(value, str) else json.dumps(value)))


def print_table(report: dict) -> None:
    rows: list = []
    for name, section in report["sections"].items():
        status = "ok" if section.get("ok") else "FAILED"
        rows.append((f"== {name}", f"{status} in {section.get('seconds')} s"))
        if "error" in section:
            rows.append((f"{name}.error", section["error"].strip().splitlines()[-1]))
        for key, value in section.get("result", {}).items():
            if key in ("output_tail",):
                continue
            _flatten(f"{name}.{key}", value, rows)
    width = min(60, max(len(k) for k, _ in rows))
    print("\n" + "-" * 100)
    for key, value in rows:
        text = str(value)
        if "output_tail" in key:
            text = text[-200:].replace("\n", " | ")
        print(f"{key:<{width}}  {text}")
    print("-" * 100, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CPU dry run)")
    parser.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    parser.add_argument("--budget", type=float, default=330.0,
                        help="seconds after which optional parts are skipped")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="comma-separated subset of " + ", ".join(SECTIONS))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 with --tiny)")
    args = parser.parse_args(argv)
    threads = args.threads or (1 if args.tiny else None)
    if threads:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    ctx = Context(args)
    if ctx.cuda and not torch.cuda.is_available():
        log("cuda was asked for but torch.cuda.is_available() is False")
    report = {"settings": {"device": args.device, "tiny": args.tiny, "budget_s": args.budget,
                           "argv": sys.argv[1:], "started": time.strftime("%Y-%m-%d %H:%M:%S")},
              "sections": {}}

    def save():
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2, default=str))

    for name in [s.strip() for s in args.sections.split(",") if s.strip()]:
        log(f"=== section {name}")
        start = time.perf_counter()
        entry: dict = {}
        try:
            entry["result"] = SECTIONS[name](ctx)
            entry["ok"] = True
        except Exception:  # noqa: BLE001 (one failing section must not lose the others)
            entry["ok"] = False
            entry["error"] = traceback.format_exc()[-4000:]
            log(f"section {name} FAILED:\n{entry['error']}")
        entry["seconds"] = round(time.perf_counter() - start, 2)
        report["sections"][name] = entry
        report["total_s"] = round(time.perf_counter() - T0, 2)
        save()
        log(f"=== section {name} done in {entry['seconds']} s")
    print_table(report)
    log(f"total {report['total_s']} s" + (f"; wrote {args.out}" if args.out else ""))
    return 0 if all(s.get("ok") for s in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
