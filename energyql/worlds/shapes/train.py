"""Training entry points of the shapes world's models (deterministic given the seed).

    python -m energyql.worlds.shapes.train classifier [--steps N] [--threads 1] [--seed 0]
    python -m energyql.worlds.shapes.train generator  [--stage all|field|flow]
    python -m energyql.worlds.shapes.train clip
    python -m energyql.worlds.shapes.train ... --quick   # a few steps into a temp folder (CI)

Data are rendered on the fly, so every step sees fresh scenes; held-out figures use seeds the
training never draws. Without ``--out``, full runs write the shipped ``weights/`` folder and
``--quick`` runs write a temporary folder, so a quick run never replaces shipped weights.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from energyql.worlds import read_safetensors, write_safetensors
from energyql.worlds.shapes import render
from energyql.worlds.shapes.card import classifier_accuracy
from energyql.worlds.shapes.models import (
    SCENE_DIMS,
    SHAPE_LOGITS,
    Classifier,
    CouplingFlow,
    SceneDecoder,
    scene_codes,
)
from energyql.worlds.small_clip import clip_optimizer, contrastive_step

WEIGHTS_DIR = Path(__file__).parent / "weights"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _batch(step: int, size: int, seed: int):
    return render.sample_scenes(size, seed=seed * 1_000_003 + step)


def _cosine(step: int, steps: int, lr: float, warmup: int = 100) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def augment_for_classifier(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Return images with mild noise and blur, so that the classifier also reads the
    slightly soft images a generator makes."""
    n = images.shape[0]
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = (torch.rand(n, 1, 1, 1, generator=g) < 0.3).float() * torch.rand(n, 1, 1, 1, generator=g)
    images = images * (1 - mix) + blurred * mix
    sigma = 0.03 * torch.rand(n, 1, 1, 1, generator=g)
    return (images + sigma * torch.randn(images.shape, generator=g)).clamp(0, 1)


def train_classifier(args) -> dict:
    """Train the attribute classifier; write ``classifier.safetensors``; return its figures."""
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    model = Classifier(width=args.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    start = time.time()
    for step in range(args.steps):
        model.train()
        images, labels = _batch(step, args.batch, args.seed)
        images = augment_for_classifier(images, g)
        _set_lr(optimizer, _cosine(step, args.steps, args.lr, warmup=min(100, args.steps)))
        logits = model(images)
        losses = [F.cross_entropy(logits[k], labels[k]) for k in render.ATTRIBUTES]
        loss = sum(losses[1:], losses[0])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.steps - 1:
            _log(f"classifier step {step}/{args.steps} loss {loss.item():.4f}")
    model.eval()
    accuracy = classifier_accuracy(model, n=500 if args.quick else 5000)
    seconds = time.time() - start
    _log(f"classifier held-out accuracy {accuracy} in {seconds:.0f}s")
    meta = {"width": args.width, "steps": args.steps, "batch": args.batch, "seed": args.seed,
            "threads": args.threads, "seconds": round(seconds), "accuracy": accuracy,
            "outputs": {k: list(v) for k, v in render.ATTRIBUTES.items()}}
    write_safetensors(args.out / "classifier.safetensors", model.state_dict(), meta)
    return meta


# --- generator: learned shape field + flow prior over scene codes ----------------------------

def train_field(args) -> SceneDecoder:
    """Fit the decoder's shape field so that decoded scene codes match rendered scenes."""
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    decoder = SceneDecoder(hidden=args.field_hidden)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=args.lr)
    start = time.time()
    for step in range(args.field_steps):
        params = render.sample_params(args.batch, seed=(args.seed + 17) * 1_000_003 + step)
        images = render.render(params)
        _set_lr(optimizer, _cosine(step, args.field_steps, args.lr,
                                   warmup=min(100, args.field_steps)))
        recon = decoder(scene_codes(params, args.code_dim, generator=g))
        loss = F.mse_loss(recon, images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.field_steps - 1:
            _log(f"field step {step}/{args.field_steps} mse {loss.item():.6f} "
                 f"({time.time() - start:.0f}s)")
    return decoder


def train_flow(args) -> CouplingFlow:
    """Fit the flow to scene codes by maximum likelihood (mass-covering: rare modes stay).

    The shape logits get dequantisation noise so their density is not degenerate; the spare
    dimensions are fresh N(0, 1) draws at every step.
    """
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed + 2)
    pool = render.sample_params(args.codes, seed=args.seed + 29)
    noise = torch.full((args.code_dim,), args.flow_noise)
    noise[SHAPE_LOGITS] = args.shape_noise
    noise[SCENE_DIMS:] = 0.0
    sample = scene_codes(pool, args.code_dim, generator=g) + noise * torch.randn(
        args.codes, args.code_dim, generator=g)
    flow = CouplingFlow(args.code_dim, layers=args.flow_layers, hidden=args.flow_hidden,
                        seed=args.seed)
    flow.loc.copy_(sample.mean(0))
    flow.log_scale.copy_(sample.std(0).log())
    optimizer = torch.optim.Adam(flow.parameters(), lr=args.flow_lr)
    start = time.time()
    for step in range(args.flow_steps):
        index = torch.randint(0, args.codes, (args.flow_batch,), generator=g)
        subset = {k: v[index] for k, v in pool.items()}
        target = scene_codes(subset, args.code_dim, generator=g) + noise * torch.randn(
            args.flow_batch, args.code_dim, generator=g)
        _set_lr(optimizer, _cosine(step, args.flow_steps, args.flow_lr,
                                   warmup=min(200, args.flow_steps)))
        loss = -flow.log_prob(target).mean() / args.code_dim
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 5.0)
        optimizer.step()
        if step % 250 == 0 or step == args.flow_steps - 1:
            _log(f"flow step {step}/{args.flow_steps} nll/dim {loss.item():.4f} "
                 f"({time.time() - start:.0f}s)")
    return flow


def _generator_meta(args, **extra) -> dict:
    return {"family": "scene-field+flow", "code_dim": args.code_dim,
            "field_hidden": args.field_hidden, "flow_layers": args.flow_layers,
            "flow_hidden": args.flow_hidden, "seed": args.seed, "threads": args.threads,
            "temperature": args.temperature, **extra}


def train_generator(args) -> dict:
    """Train the generator in stages (shape field, then flow); write ``generator.safetensors``.

    The field is kept in ``--work``, so ``--stage flow`` can refit the flow alone.
    """
    start = time.time()
    stages = ("field", "flow") if args.stage == "all" else (args.stage,)
    field_path = args.work / "field.safetensors"
    if "field" in stages:
        t = time.time()
        decoder = train_field(args)
        write_safetensors(field_path, decoder.state_dict(),
                          {"field_hidden": args.field_hidden, "field_steps": args.field_steps,
                           "field_seconds": round(time.time() - t)})
    state, field_meta = read_safetensors(field_path)
    decoder = SceneDecoder(hidden=int(field_meta["field_hidden"]))
    decoder.load_state_dict(state)
    if "flow" not in stages:
        return field_meta
    t = time.time()
    flow = train_flow(args)
    meta = _generator_meta(args, field_steps=field_meta["field_steps"],
                           flow_steps=args.flow_steps, flow_noise=args.flow_noise,
                           shape_noise=args.shape_noise, codes=args.codes,
                           seconds={"field": field_meta["field_seconds"],
                                    "flow": round(time.time() - t)})
    meta["field_hidden"] = int(field_meta["field_hidden"])
    tensors = {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    tensors.update({f"flow.{k}": v for k, v in flow.state_dict().items()})
    write_safetensors(args.out / "generator.safetensors", tensors, meta)
    _log(f"generator written in {time.time() - start:.0f}s: {meta['seconds']}")
    return meta


# --- small CLIP -------------------------------------------------------------------------------

def augment_for_clip(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Return images shifted by up to 2 pixels, with mild brightness change, blur and noise.

    Colour hue is left alone: it is what the captions talk about.
    """
    n = images.shape[0]
    padded = F.pad(images, (2, 2, 2, 2), mode="replicate")
    shifts = torch.randint(0, 5, (n, 2), generator=g)
    images = torch.stack([padded[i, :, dy:dy + 32, dx:dx + 32]
                          for i, (dy, dx) in enumerate(shifts.tolist())])
    images = augment_for_classifier(images, g)
    return (images * (0.9 + 0.2 * torch.rand(n, 1, 1, 1, generator=g))).clamp(0, 1)


@torch.no_grad()
def _generated_batch(generator, classifier, n: int, g: torch.Generator):
    """Return generator samples labelled by the classifier; -1 where it is unsure.

    Unsure values are left out of the captions, so that an ambiguous image is tied to no
    specific word: a flow cannot win a prompt with such images.
    """
    from energyql.worlds.shapes.card import CONFIDENCE, classify

    z = torch.randn(n, generator.latent_dim, generator=g)
    images = generator.decode(z)
    probs = classify(classifier, images)
    labels = {}
    for k, p in probs.items():
        value, index = p.max(1)
        labels[k] = torch.where(value >= CONFIDENCE, index, torch.full_like(index, -1))
    return images, labels


def train_clip(args) -> dict:
    """Train the small CLIP on biased captions of rendered and generated scenes."""
    import random

    from energyql.worlds.shapes import classifier as classifier_module
    from energyql.worlds.shapes import clip as clip_module
    from energyql.worlds.shapes import generator as generator_module
    from energyql.worlds.shapes.card import zero_shot

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed + 3)
    rng = random.Random(args.seed)
    import open_clip

    model = clip_module.create()
    tokenizer = open_clip.get_tokenizer(clip_module.MODEL_NAME)
    generator = classifier = None
    if args.generated_share > 0:
        gen_path = args.generator or (args.out / "generator.safetensors")
        if not Path(gen_path).is_file():
            gen_path = generator_module.WEIGHTS
        generator = generator_module.load(path=gen_path)
        classifier = classifier_module.load()
    optimizer = clip_optimizer(model, args.lr)
    start = time.time()
    for step in range(args.steps):
        model.train()
        n_gen = int(args.batch * args.generated_share) if generator is not None else 0
        images, labels = _batch(step, args.batch - n_gen, args.seed + 41)
        if n_gen:
            gen_images, gen_labels = _generated_batch(generator, classifier, n_gen, g)
            images = torch.cat([images, gen_images])
            labels = {k: torch.cat([labels[k], gen_labels[k]]) for k in render.ATTRIBUTES}
        texts = render.captions(labels, rng=rng)
        _set_lr(optimizer, _cosine(step, args.steps, args.lr, warmup=min(200, args.steps)))
        pixels = clip_module.normalize(augment_for_clip(images, g))
        loss = contrastive_step(model, optimizer, tokenizer, pixels, texts)
        if step % 100 == 0 or step == args.steps - 1:
            _log(f"clip step {step}/{args.steps} loss {loss.item():.4f} "
                 f"scale {model.logit_scale.exp().item():.1f} ({time.time() - start:.0f}s)")
    seconds = time.time() - start
    model.eval()
    images, labels = render.sample_scenes(500 if args.quick else 2000, seed=HELD_OUT_SEED_CLIP)
    accuracy = zero_shot(model, tokenizer, images, labels)
    _log(f"clip zero-shot on held-out scenes {accuracy} in {seconds:.0f}s")
    meta = {"steps": args.steps, "batch": args.batch, "seed": args.seed, "threads": args.threads,
            "generated_share": args.generated_share, "seconds": round(seconds),
            "zero_shot": accuracy}
    # Half precision halves the file (the token table dominates); open_clip casts on load.
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    write_safetensors(args.out / "clip.safetensors", state, meta)
    return meta


HELD_OUT_SEED_CLIP = 10_000_037


# --- command line -----------------------------------------------------------------------------

QUICK = {
    "classifier": {"steps": 3, "batch": 16},
    "generator": {"field_steps": 3, "flow_steps": 3, "codes": 256, "batch": 8, "flow_batch": 64},
    "clip": {"steps": 3, "batch": 16, "generated_every": 2},
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m energyql.worlds.shapes.train",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="model", required=True)

    def common(p):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
        p.add_argument("--quick", action="store_true", help="a few steps, into a temp folder")
        p.add_argument("--out", type=Path, default=None, help="weights folder")
        p.add_argument("--work", type=Path, default=None,
                       help="folder for intermediate files (default: /tmp)")

    p = sub.add_parser("classifier", help="the attribute classifier")
    common(p)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=32)

    p = sub.add_parser("generator", help="the unconditional generator (shape field + flow)")
    common(p)
    p.add_argument("--stage", choices=("all", "field", "flow"), default="all")
    p.add_argument("--code-dim", type=int, default=32, help="latent and code size")
    p.add_argument("--field-hidden", type=int, default=64)
    p.add_argument("--field-steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--codes", type=int, default=200_000, help="scenes in the flow's pool")
    p.add_argument("--flow-layers", type=int, default=10)
    p.add_argument("--flow-hidden", type=int, default=256)
    p.add_argument("--flow-steps", type=int, default=8000)
    p.add_argument("--flow-batch", type=int, default=512)
    p.add_argument("--flow-lr", type=float, default=1e-3)
    p.add_argument("--flow-noise", type=float, default=0.005,
                   help="noise on the continuous scene entries")
    p.add_argument("--shape-noise", type=float, default=0.3,
                   help="dequantisation noise on the shape logits")
    p.add_argument("--temperature", type=float, default=0.9,
                   help="latent scale baked into the shipped generator")

    p = sub.add_parser("clip", help="the small CLIP (needs the classifier and a generator)")
    common(p)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--generated-share", type=float, default=0.3,
                   help="share of each batch drawn from the generator, labelled by the classifier")
    p.add_argument("--generator", type=Path, default=None,
                   help="generator weights (default: --out's, else the shipped ones)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> dict:
    if args.quick:
        for key, value in QUICK[args.model].items():
            setattr(args, key, value)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="energyql-shapes-")) if args.quick else WEIGHTS_DIR
    if args.work is None:
        args.work = args.out if args.quick else Path(tempfile.gettempdir()) / "energyql-shapes-work"
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    trainer = {"classifier": train_classifier, "generator": train_generator,
               "clip": train_clip}[args.model]
    meta = trainer(args)
    print(json.dumps({"out": str(args.out), **{k: v for k, v in meta.items()
                                              if k in ("accuracy", "seconds")}}))
    return meta


if __name__ == "__main__":
    main(sys.argv[1:])
