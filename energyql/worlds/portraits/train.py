"""Train the portraits world's models: ``python -m energyql.worlds.portraits.train judge``.

The judge (attributes, pose, identity; see :mod:`energyql.worlds.portraits.models`) learns
from rendered portraits with their ground truth. Training is deterministic on a CPU for a
given seed and thread count; the weights are written atomically as fp16 safetensors with the
settings and held-out figures in their metadata.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from energyql.worlds import write_safetensors
from energyql.worlds.portraits import render as R
from energyql.worlds.portraits.models import POSE, Judge
from energyql.worlds.small_clip import clip_optimizer, contrastive_step

WEIGHTS_DIR = Path(__file__).parent / "weights"
HELD_OUT_SEED = 9_000_011
IDENTITY_WEIGHT = 5.0


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def render_pool(n: int, seed: int, batch: int = 512) -> tuple[torch.Tensor, dict]:
    """Return ``n`` portraits as uint8 (n, 3, 64, 64) and their labels."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    with torch.no_grad():
        for start in range(0, n, batch):
            params = R.sample_params(min(batch, n - start), generator=g)
            images.append((R.render(params) * 255).round().to(torch.uint8))
            labels.append({k: params[k] for k in R.LABEL_KEYS})
    return torch.cat(images), {k: torch.cat([b[k] for b in labels]) for k in R.LABEL_KEYS}


def judge_loss(out: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy per attribute + pose and identity regression (unit-scaled)."""
    loss = sum(F.cross_entropy(out[name], labels[name]) for name in R.ATTRIBUTES)
    pose = torch.stack([labels[p] for p in POSE], 1)
    loss = loss + F.mse_loss(out["pose"] / out["pose"].new_tensor([30.0, 20.0]),
                             pose / pose.new_tensor([30.0, 20.0]))
    identity = torch.stack([labels[f] for f in R.IDENTITY], 1)
    # Identity factors move features by a pixel or two: weigh them up, or the attribute
    # heads (large, easy gradients) take all of the backbone.
    return loss + IDENTITY_WEIGHT * F.mse_loss(out["identity"], identity)


@torch.no_grad()
def judge_figures(judge: Judge, images: torch.Tensor, labels: dict, batch: int = 500) -> dict:
    """Held-out accuracy per attribute, pose MAE (degrees) and identity error."""
    judge.eval()
    outs: dict[str, list] = {}
    for start in range(0, len(images), batch):
        out = judge(images[start:start + batch].float() / 255)
        for key, value in out.items():
            outs.setdefault(key, []).append(value)
    out = {k: torch.cat(v) for k, v in outs.items()}
    figures = {f"accuracy_{name}": round(float((out[name].argmax(1) == labels[name])
                                               .float().mean()), 4) for name in R.ATTRIBUTES}
    for i, name in enumerate(POSE):
        figures[f"mae_{name}"] = round(float((out["pose"][:, i] - labels[name]).abs().mean()), 3)
    identity = torch.stack([labels[f] for f in R.IDENTITY], 1)
    figures["identity_rmse"] = round(float((out["identity"] - identity).pow(2).mean().sqrt()), 4)
    return figures


def train_judge(args) -> dict:
    torch.manual_seed(args.seed)
    _log(f"rendering {args.pool} training portraits")
    images, labels = render_pool(args.pool, args.seed)
    held_images, held_labels = render_pool(args.held_out, HELD_OUT_SEED)
    judge = Judge(width=args.width)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=args.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.seed + 1)
    began = time.time()
    for step in range(args.steps):
        judge.train()
        rows = torch.randint(len(images), (args.batch,), generator=g)
        batch = images[rows].float() / 255
        # Small brightness/contrast jitter: the generator's blends are a little off the data.
        gain = 1 + 0.1 * (torch.rand(len(rows), 1, 1, 1, generator=g) - 0.5)
        batch = ((batch - 0.5) * gain + 0.5).clamp(0, 1)
        loss = judge_loss(judge(batch), {k: v[rows] for k, v in labels.items()})
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            _log(f"judge step {step + 1}/{args.steps} loss {float(loss.detach()):.4f}")
    figures = judge_figures(judge, held_images, held_labels)
    seconds = round(time.time() - began, 1)
    _log(f"held-out: {json.dumps(figures)} ({seconds} s training)")
    meta = {"width": args.width, "steps": args.steps, "batch": args.batch, "lr": args.lr,
            "seed": args.seed, "pool": args.pool, "threads": torch.get_num_threads(),
            "seconds": seconds, "figures": figures}
    state = {k: v.half() if v.is_floating_point() else v for k, v in judge.state_dict().items()}
    out = Path(args.out) if args.out else WEIGHTS_DIR / "judge.safetensors"
    write_safetensors(out, state, meta)
    _log(f"wrote {out}")
    return meta


# --- small CLIP -------------------------------------------------------------------------------

HELD_OUT_SEED_CLIP = 9_000_029
CONFIDENT = 0.9  # a generated factor weaker than this is unknown to its caption


def generated_pool(n: int, seed: int, batch: int = 512) -> tuple[torch.Tensor, dict]:
    """Return ``n`` generator samples (uint8) and their truth, -1 where a factor is blended."""
    from energyql.worlds.portraits.generator import PortraitsGenerator

    gen = PortraitsGenerator()
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    with torch.no_grad():
        for start in range(0, n, batch):
            z = gen.sample_latent(min(batch, n - start), generator=g)
            params = gen.params(z)
            images.append((R.render(params) * 255).round().to(torch.uint8))
            labels.append({name: torch.where(params[name].max(1).values >= CONFIDENT,
                                             params[name].argmax(1), -1)
                           for name in R.ATTRIBUTES})
    return torch.cat(images), {k: torch.cat([b[k] for b in labels]) for k in R.ATTRIBUTES}


def augment_for_clip(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shift by up to 3 pixels and change brightness a little (colours carry meaning)."""
    n, size = images.shape[0], images.shape[-1]
    padded = F.pad(images, (3, 3, 3, 3), mode="replicate")
    shifts = torch.randint(0, 7, (n, 2), generator=g)
    images = torch.stack([padded[i, :, dy:dy + size, dx:dx + size]
                          for i, (dy, dx) in enumerate(shifts.tolist())])
    return (images * (0.9 + 0.2 * torch.rand(n, 1, 1, 1, generator=g))).clamp(0, 1)


@torch.no_grad()
def zero_shot(model, tokenizer, images: torch.Tensor, labels: dict, batch: int = 500) -> dict:
    """Zero-shot accuracy per attribute with :data:`render.PROMPTS`."""
    from energyql.worlds.portraits.clip import normalize

    model.eval()
    feats = torch.cat([model.encode_image(normalize(images[i:i + batch].float() / 255),
                                          normalize=True) for i in range(0, len(images), batch)])
    out = {}
    for name, prompts in R.PROMPTS.items():
        text = model.encode_text(tokenizer(list(prompts)), normalize=True)
        out[name] = round(float(((feats @ text.T).argmax(1) == labels[name]).float().mean()), 4)
    return out


def train_clip(args) -> dict:
    """Train the small CLIP on biased captions of rendered and generated portraits."""
    import random

    import open_clip

    from energyql.worlds.portraits import clip as clip_module

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed + 3)
    rng = random.Random(args.seed)
    _log(f"rendering {args.pool} portraits and {args.generated} generated ones")
    data_images, data_labels = render_pool(args.pool, args.seed + 11)
    data_labels = {k: data_labels[k] for k in R.ATTRIBUTES}
    gen_images, gen_labels = generated_pool(args.generated, args.seed + 13)
    images = torch.cat([data_images, gen_images])
    labels = {k: torch.cat([data_labels[k], gen_labels[k]]) for k in R.ATTRIBUTES}
    model = clip_module.create()
    tokenizer = open_clip.get_tokenizer(clip_module.MODEL_NAME)
    optimizer = clip_optimizer(model, args.lr)
    began = time.time()
    for step in range(args.steps):
        model.train()
        rows = torch.randint(len(images), (args.batch,), generator=g)
        batch_labels = {k: v[rows] for k, v in labels.items()}
        texts = R.captions(batch_labels, rng=rng)
        warm = min(1.0, (step + 1) / 200)
        lr = args.lr * warm * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        pixels = clip_module.normalize(augment_for_clip(images[rows].float() / 255, g))
        loss = contrastive_step(model, optimizer, tokenizer, pixels, texts)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            _log(f"clip step {step + 1}/{args.steps} loss {float(loss.detach()):.4f} "
                 f"scale {float(model.logit_scale.exp()):.1f}")
    seconds = round(time.time() - began, 1)
    held_images, held_labels = render_pool(args.held_out, HELD_OUT_SEED_CLIP)
    accuracy = zero_shot(model, tokenizer, held_images, held_labels)
    _log(f"zero-shot on held-out portraits: {json.dumps(accuracy)} ({seconds} s training)")
    meta = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
            "pool": args.pool, "generated": args.generated, "threads": torch.get_num_threads(),
            "seconds": seconds, "zero_shot": accuracy}
    # Half precision halves the file (the token table dominates); open_clip casts on load.
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    out = Path(args.out) if args.out else WEIGHTS_DIR / "clip.safetensors"
    write_safetensors(out, state, meta)
    _log(f"wrote {out}")
    return meta


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    judge = commands.add_parser("judge", help="train the attribute/pose/identity judge")
    judge.add_argument("--steps", type=int, default=2500)
    judge.add_argument("--batch", type=int, default=64)
    judge.add_argument("--lr", type=float, default=2e-3)
    judge.add_argument("--width", type=int, default=16)
    judge.add_argument("--pool", type=int, default=24_000)
    judge.add_argument("--held-out", type=int, default=2_000)
    judge.add_argument("--seed", type=int, default=0)
    judge.add_argument("--threads", type=int, default=1)
    judge.add_argument("--log-every", type=int, default=100)
    judge.add_argument("--out", default=None)
    clip = commands.add_parser("clip", help="train the small CLIP on biased captions")
    clip.add_argument("--steps", type=int, default=3000)
    clip.add_argument("--batch", type=int, default=128)
    clip.add_argument("--lr", type=float, default=2e-3)
    clip.add_argument("--pool", type=int, default=20_000)
    clip.add_argument("--generated", type=int, default=8_000)
    clip.add_argument("--held-out", type=int, default=2_000)
    clip.add_argument("--seed", type=int, default=0)
    clip.add_argument("--threads", type=int, default=1)
    clip.add_argument("--log-every", type=int, default=100)
    clip.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return train_judge(args) if args.command == "judge" else train_clip(args)


if __name__ == "__main__":
    main()
