"""Re-measure the shapes world's models against the issue's quality bars (the model card).

    python -m energyql.worlds.shapes.card --json          # figures with stable keys
    python -m energyql.worlds.shapes.card --grids docs/worlds   # also write sample grids

Keys: ``classifier_accuracy`` (head -> accuracy on held-out scenes), ``generator``
(``confident_share``, ``tv`` (attribute -> total variation to the data), ``combos_present``,
``combos_total``, ``joint_ratio_min``, ``joint_ratio_max``), ``clip_zero_shot`` (``data`` and
``generated``, each attribute -> accuracy with :data:`render.PROMPTS`), and
``clip_sturdiness`` (prompt -> share of CLIP-optimised generator samples that the classifier
reads as the prompt says).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from energyql.worlds.shapes import render

HELD_OUT_SEED = 10_000_019
GENERATED_SEED = 20_000_003
CONFIDENCE = 0.9


@torch.no_grad()
def classify(classifier, images: torch.Tensor, batch: int = 500) -> dict[str, torch.Tensor]:
    """Return class probabilities per head for ``images``."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in render.ATTRIBUTES}
    for start in range(0, images.shape[0], batch):
        logits = classifier(images[start:start + batch])
        for k in out:
            out[k].append(logits[k].softmax(dim=1))
    return {k: torch.cat(v) for k, v in out.items()}


def classifier_accuracy(classifier, n: int = 5000, seed: int = HELD_OUT_SEED) -> dict[str, float]:
    """Return held-out accuracy per head on ``n`` fresh scenes."""
    images, labels = render.sample_scenes(n, seed=seed)
    probs = classify(classifier, images)
    return {k: (probs[k].argmax(1) == labels[k]).float().mean().item() for k in render.ATTRIBUTES}


def combo_index(labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Return the index into :data:`render.COMBOS` of each labelled scene."""
    shape_color = labels["shape"] * len(render.COLORS) + labels["color"]
    return shape_color * len(render.SIZES) + labels["size"]


def generator_figures(generator, classifier, n: int = 5000, seed: int = GENERATED_SEED) -> dict:
    """Return the generator's figures on ``n`` samples judged by the classifier."""
    images = generator.sample(n, seed=seed)
    probs = classify(classifier, images)
    confident = torch.stack([p.max(1).values >= CONFIDENCE for p in probs.values()]).all(0)
    labels = {k: p.argmax(1) for k, p in probs.items()}
    tv = {}
    for k, values in render.ATTRIBUTES.items():
        share = torch.bincount(labels[k], minlength=len(values)).double() / n
        data = torch.tensor([render.marginal(k)[v] for v in values], dtype=torch.float64)
        tv[k] = 0.5 * (share - data).abs().sum().item()
    counts = torch.bincount(combo_index(labels), minlength=len(render.COMBOS)).double()
    ratio = (counts / n) / render.JOINT_PROBS
    return {
        "confident_share": confident.double().mean().item(),
        "tv": tv,
        "combos_present": int((counts > 0).sum().item()),
        "combos_total": len(render.COMBOS),
        "joint_ratio_min": ratio.min().item(),
        "joint_ratio_max": ratio.max().item(),
        "joint_share": {"/".join(c): (counts[i] / n).item() for i, c in enumerate(render.COMBOS)},
    }


@torch.no_grad()
def zero_shot(model, tokenizer, images: torch.Tensor, labels: dict[str, torch.Tensor],
              batch: int = 500) -> dict[str, float]:
    """Return CLIP zero-shot accuracy per attribute with :data:`render.PROMPTS`."""
    from energyql.worlds.shapes.clip import normalize

    feats = torch.cat([model.encode_image(normalize(images[i:i + batch]), normalize=True)
                       for i in range(0, images.shape[0], batch)])
    out = {}
    for k, prompts in render.PROMPTS.items():
        text = model.encode_text(tokenizer(list(prompts)), normalize=True)
        out[k] = ((feats @ text.T).argmax(1) == labels[k]).float().mean().item()
    return out


def clip_figures(model, tokenizer, generator, classifier, n: int = 5000) -> dict:
    """Return zero-shot accuracy on held-out scenes and on generator samples."""
    images, labels = render.sample_scenes(n, seed=HELD_OUT_SEED + 1)
    out = {"data": zero_shot(model, tokenizer, images, labels)}
    if generator is not None:
        images = generator.sample(n, seed=GENERATED_SEED + 1)
        labels = {k: p.argmax(1) for k, p in classify(classifier, images).items()}
        out["generated"] = zero_shot(model, tokenizer, images, labels)
    return out


ATTACK_PROMPTS = {
    "a blue triangle": {"shape": "triangle", "color": "blue"},
    "a small green square": {"shape": "square", "color": "green", "size": "small"},
    "a red circle": {"shape": "circle", "color": "red"},
}


def clip_sturdiness(model, tokenizer, generator, classifier, *, n: int = 16, pool: int = 2000,
                    steps: int = 60, lr: float = 0.05, seed: int = GENERATED_SEED + 3
                    ) -> dict[str, float]:
    """Return, per prompt, the share of CLIP-optimised generator samples that the classifier
    reads as the prompt says.

    This mimics what a flow trained on ``clip(prompt)`` does: it moves to the latents CLIP
    scores best, then pushes further. Here the ``n`` best of ``pool`` prior samples are
    refined by gradient descent on the CLIP energy plus the prior; a CLIP that a generator can
    fool (dark or off-manifold images that score well) shows a low share.
    """
    from energyql.worlds.shapes.clip import normalize

    out = {}
    gen = torch.Generator().manual_seed(seed)
    for prompt, target in ATTACK_PROMPTS.items():
        with torch.no_grad():
            text = model.encode_text(tokenizer([prompt]), normalize=True)[0]
            latents = torch.randn(pool, generator.latent_dim, generator=gen)
            scores = torch.cat([
                model.encode_image(normalize(generator.decode(latents[i:i + 500])),
                                   normalize=True) @ text
                for i in range(0, pool, 500)])
        z = latents[scores.topk(n).indices].clone().requires_grad_()
        optimizer = torch.optim.Adam([z], lr=lr)
        for _ in range(steps):
            image = model.encode_image(normalize(generator.decode(z)), normalize=True)
            energy = 50.0 * (1 - image @ text) + 0.5 * z.pow(2).sum(1)
            optimizer.zero_grad()
            energy.mean().backward()
            optimizer.step()
        probs = classify(classifier, generator.decode(z.detach()))
        hit = torch.ones(n, dtype=torch.bool)
        for attribute, value in target.items():
            hit &= probs[attribute].argmax(1) == render.ATTRIBUTES[attribute].index(value)
        out[prompt] = hit.float().mean().item()
    return out


def save_grids(folder: Path, generator, n: int = 64, scale: int = 2) -> list[Path]:
    """Write ``shapes-data.png`` and ``shapes-generated.png`` (8x8 grids) into ``folder``."""
    from torchvision.utils import save_image

    folder.mkdir(parents=True, exist_ok=True)
    data, _ = render.sample_scenes(n, seed=HELD_OUT_SEED + 2)
    grids = {"shapes-data.png": data}
    if generator is not None:
        grids["shapes-generated.png"] = generator.sample(n, seed=GENERATED_SEED + 2)
    paths = []
    for name, images in grids.items():
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
        save_image(images, folder / name, nrow=8, padding=2, pad_value=1.0)
        paths.append(folder / name)
    return paths


def measure(n: int = 5000, *, include: tuple[str, ...] = ("classifier", "generator", "clip"),
            generator_path=None, classifier_path=None, clip_path=None,
            sturdiness: bool = True) -> dict:
    """Load the shipped (or given) models and return every figure of the card."""
    from energyql.worlds.shapes import classifier as classifier_module
    from energyql.worlds.shapes import clip as clip_module
    from energyql.worlds.shapes import generator as generator_module

    figures: dict = {}
    clf = classifier_module.load(path=classifier_path)
    gen = None
    if "classifier" in include:
        figures["classifier_accuracy"] = classifier_accuracy(clf, n)
    if "generator" in include or "clip" in include:
        gen = generator_module.load(path=generator_path)
    if "generator" in include:
        figures["generator"] = generator_figures(gen, clf, n)
    if "clip" in include:
        model, tokenizer = clip_module.load(path=clip_path)
        figures["clip_zero_shot"] = clip_figures(model, tokenizer, gen, clf, n)
        if sturdiness:
            figures["clip_sturdiness"] = clip_sturdiness(model, tokenizer, gen, clf)
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m energyql.worlds.shapes.card",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("-n", type=int, default=5000, help="samples per figure")
    parser.add_argument("--only", action="append", choices=("classifier", "generator", "clip"),
                        help="measure only these models (repeatable)")
    parser.add_argument("--grids", type=Path, default=None, help="write sample grids here")
    parser.add_argument("--no-sturdiness", action="store_true",
                        help="skip the gradient attack on the CLIP energy (the slowest figure)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    figures = measure(args.n, include=tuple(args.only or ("classifier", "generator", "clip")),
                      sturdiness=not args.no_sturdiness)
    if args.grids is not None:
        from energyql.worlds.shapes import generator as generator_module

        save_grids(args.grids, generator_module.load())
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key}: {json.dumps(value)}")
        print(f"({time.time() - start:.0f}s)", file=sys.stderr)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
