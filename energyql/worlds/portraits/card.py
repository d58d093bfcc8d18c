"""Measure the portraits world's models for its model card.

    python -m energyql.worlds.portraits.card --json card.json [--grids docs/worlds]

Keys: ``judge`` (held-out accuracy per attribute, pose MAE, identity error),
``generator`` (on generator samples: the judge's agreement with the generator's own ground
truth, TV per attribute to the data's distribution, how many gender x age x race cells
occur, the share of samples whose every factor is clearly one value), ``clip`` (zero-shot
accuracy per attribute on held-out data) and ``identity`` (distance between one face's
embeddings across poses, "within", against the distance between faces, "between") and
``prompts`` (per prompt of the generator: the written gender x race KL to uniform, the
drawn one on generator samples, their TV, and every attribute's drawn shares).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from energyql.worlds.portraits import render as R
from energyql.worlds.portraits.train import (
    HELD_OUT_SEED,
    HELD_OUT_SEED_CLIP,
    judge_figures,
    render_pool,
    zero_shot,
)

GENERATED_SEED = 9_000_047
IDENTITY_SEED = 9_000_053


def _shares(values: torch.Tensor, k: int) -> torch.Tensor:
    return torch.bincount(values, minlength=k).double() / len(values)


@torch.no_grad()
def generator_figures(judge, n: int = 5000, seed: int = GENERATED_SEED, batch: int = 500) -> dict:
    """The judge against the generator's ground truth, and the generator against the data."""
    from energyql.worlds.portraits.generator import PortraitsGenerator

    gen = PortraitsGenerator()
    z = gen.sample_latent(n, generator=torch.Generator().manual_seed(seed))
    truth = gen.truth(z)
    params = gen.params(z)
    judged: dict[str, list] = {}
    for start in range(0, n, batch):
        out = judge(gen.decode(z[start:start + batch]))
        for name in R.ATTRIBUTES:
            judged.setdefault(name, []).append(out[name].argmax(1))
    agreement, tv = {}, {}
    for name, values in R.ATTRIBUTES.items():
        agreement[name] = round(float((torch.cat(judged[name]) == truth[name]).float().mean()), 4)
        # The data's marginal from 200,000 draws, so that the TV measures the generator's
        # sampling error and not that of a second sample as well.
        data = torch.tensor([R.marginal(name)[v] for v in values], dtype=torch.float64)
        tv[name] = round(0.5 * float((_shares(truth[name], len(values)) - data).abs().sum()), 4)
    cells = truth["gender"] * 12 + truth["age"] * 4 + truth["race"]
    clear = torch.stack([params[name].max(1).values > 0.9 for name in R.ATTRIBUTES]).all(0)
    return {"samples": n, "judge_agreement": agreement, "tv_to_data": tv,
            "gender_age_race_cells": int((torch.bincount(cells, minlength=24) > 0).sum()),
            "clear_share": round(float(clear.float().mean()), 4)}


def _kl_to_uniform(shares: torch.Tensor) -> float:
    positive = shares[shares > 0]
    return float((positive * (positive * len(shares)).log()).sum())


@torch.no_grad()
def prompt_figures(n: int = 20_000, seed: int = GENERATED_SEED) -> dict:
    """Per prompt: who the generator draws against the written tables, on its ground truth."""
    from energyql.worlds.portraits.generator import PortraitsGenerator
    from energyql.worlds.portraits.prompts import PROMPTS

    out: dict = {"samples": n}
    for text, people in PROMPTS.items():
        gen = PortraitsGenerator(text)
        truth = gen.truth(gen.sample_latent(n, generator=torch.Generator().manual_seed(seed)))
        joint = _shares(truth["gender"] * len(R.RACES) + truth["race"], 2 * len(R.RACES))
        written = torch.tensor(people.joint(), dtype=torch.float64).flatten()
        out[text] = {
            "gender x race KL to uniform (written)": round(people.kl_to_uniform(), 4),
            "gender x race KL to uniform (drawn)": round(_kl_to_uniform(joint), 4),
            "gender x race TV to written": round(0.5 * float((joint - written).abs().sum()), 4),
            "shares": {name: {v: round(float(s), 4) for v, s in
                              zip(values, _shares(truth[name], len(values)))}
                       for name, values in R.ATTRIBUTES.items()},
        }
    return out


@torch.no_grad()
def identity_figures(embedder, faces: int = 200, poses: int = 5,
                     seed: int = IDENTITY_SEED) -> dict:
    """Mean embedding distance of one face across ``poses`` poses vs between faces."""
    params = R.sample_params(faces, seed)
    yaws = torch.linspace(R.YAW_RANGE[0], R.YAW_RANGE[1], poses)
    embeddings = []
    for yaw in yaws.tolist():
        posed = dict(params, yaw=torch.full((faces,), yaw))
        embeddings.append(embedder(R.render(posed)))
    grid = torch.stack(embeddings, 1)                                 # faces, poses, d
    within = torch.cdist(grid, grid).sum((1, 2)) / (poses * (poses - 1))
    between = (grid - grid.roll(1, dims=0)).norm(dim=2).mean(1)
    return {"faces": faces, "poses": poses, "within": round(float(within.mean()), 4),
            "between": round(float(between.mean()), 4),
            "ratio": round(float(within.mean() / between.mean()), 4)}


def measure(n: int = 5000, *, include: tuple[str, ...] = ("judge", "generator", "clip",
                                                         "identity", "prompts")) -> dict:
    """Return the card's figures (see the module docstring)."""
    from energyql.worlds.portraits import judge as judge_module
    from energyql.worlds.portraits.models import IdentityEmbedder

    judge = judge_module.load()
    card: dict = {}
    if "judge" in include:
        images, labels = render_pool(min(n, 2000), HELD_OUT_SEED)
        card["judge"] = judge_figures(judge, images, labels)
    if "generator" in include:
        card["generator"] = generator_figures(judge, n)
    if "clip" in include:
        from energyql.worlds.portraits import clip as clip_module

        model, tokenizer = clip_module.load()
        images, labels = render_pool(min(n, 2000), HELD_OUT_SEED_CLIP)
        card["clip"] = zero_shot(model, tokenizer, images, labels)
    if "identity" in include:
        card["identity"] = identity_figures(IdentityEmbedder(judge).eval())
    if "prompts" in include:
        card["prompts"] = prompt_figures()
    return card


def save_grids(folder: Path, n: int = 64, scale: int = 2) -> list[Path]:
    """Write a data grid and a generator grid (PNG) for the card."""
    from energyql.report import save_grid
    from energyql.worlds.portraits.generator import PortraitsGenerator

    folder.mkdir(parents=True, exist_ok=True)
    data, _ = R.sample_portraits(n, seed=1)
    gen = PortraitsGenerator()
    generated = gen.decode(gen.sample_latent(n, generator=torch.Generator().manual_seed(2)))
    paths = [folder / "portraits-data.png", folder / "portraits-generated.png"]
    for path, images in zip(paths, (data, generated)):
        save_grid(path, images, scale=scale)
    return paths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m energyql.worlds.portraits.card",
                                     description="Measure the portraits world's models.")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--grids", type=Path, help="write data and generator grids here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    began = time.time()
    card = measure(args.samples)
    card["seconds"] = round(time.time() - began, 1)
    card["threads"] = args.threads
    text = json.dumps(card, indent=2)
    if args.json:
        from energyql.io import write_text

        write_text(args.json, text + "\n")
    if args.grids:
        save_grids(args.grids)
    print(text, file=sys.stdout)
    return card


if __name__ == "__main__":
    main()
