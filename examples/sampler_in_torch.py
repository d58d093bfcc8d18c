"""Use a trained sampler inside a plain torch program: ``energyql.Sampler`` is an nn.Module.

Here it feeds a small classifier being trained on controlled samples, batch by batch, as any
data source would; ``log_prob`` gives the exact density of the latents it drew. Trains a quick
artifact first unless ``--artifact`` names one.

    python examples/sampler_in_torch.py --quick --out /tmp/torch-loop
    python examples/sampler_in_torch.py --artifact runs/red-circles --out /tmp/torch-loop
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import energyql as eq

QUICK = dict(steps=6, batch=16, blocks=4, width=64, warm_start_samples=128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/torch-loop", help="output folder")
    parser.add_argument("--artifact", help="an existing artifact folder (default: train one)")
    parser.add_argument("--quick", action="store_true", help="seconds-scale settings")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.quick:
        torch.set_num_threads(1)
    artifact = args.artifact
    if artifact is None:
        eq.train("color == red", gen="shapes", out=args.out,
                 **({**QUICK, "threads": 1} if args.quick else {}))
        artifact = args.out

    sampler = eq.Sampler.load(artifact, device=args.device)   # frozen, no gradients
    print(sampler.manifest.canonical, "| latent size", sampler.latent_dim)

    # A downstream model trained on the controlled samples (a stand-in for your own).
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Flatten(),
                          nn.LazyLinear(1)).to(args.device)
    model(torch.zeros(1, 3, 32, 32, device=args.device))      # materialise the lazy layer
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(5 if args.quick else 200):
        images = sampler.sample(32, seed=step)                 # (32, 3, 32, 32) in [0, 1]
        target = images.mean((1, 2, 3)).unsqueeze(1)           # e.g. learn the brightness
        loss = nn.functional.mse_loss(model(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"downstream loss after {step + 1} steps: {loss.item():.4f}")

    z = sampler.sample_latents(8, seed=0)                      # the generator's latents
    print("exact log-density of 8 latents:", [round(v, 1) for v in sampler.log_prob(z).tolist()])
    images = sampler(sampler.noise(4, seed=1))                 # forward(eps) -> images
    print("forward(eps):", tuple(images.shape), "requires grad:", images.requires_grad)


if __name__ == "__main__":
    main()
