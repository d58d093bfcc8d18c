"""Control a generator of your own: wrap any ``nn.Module`` with ``ModuleGenerator``.

The module maps ``(B, latent_dim)`` latents to images; ``output_range`` says what range its
output has (mapped to [0, 1]), ``catalog`` which world's judges read its images. Here a small
decoder of our own draws 32x32 images and the shapes world's classifier judges them; with
``catalog="generic"`` only CLIP prompts apply.

    python examples/custom_generator.py --quick --out /tmp/custom
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import energyql as eq


class TinyDecoder(nn.Module):
    """Your network: latents -> images in [-1, 1] (random weights stand in for trained ones)."""

    def __init__(self, latent_dim: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(latent_dim, 32 * 8 * 8), nn.Unflatten(1, (32, 8, 8)),
                                 nn.Upsample(scale_factor=2), nn.Conv2d(32, 16, 3, padding=1),
                                 nn.SiLU(), nn.Upsample(scale_factor=2),
                                 nn.Conv2d(16, 3, 3, padding=1), nn.Tanh())

    def forward(self, z):
        return self.net(z)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/custom", help="output folder")
    parser.add_argument("--quick", action="store_true", help="seconds-scale settings")
    args = parser.parse_args()

    generator = eq.ModuleGenerator(TinyDecoder(16), latent_dim=16, output_range=(-1, 1),
                                   catalog="shapes", id="my-decoder", image_size=32)
    generator.requires_grad_(False)
    quick = dict(steps=6, batch=16, blocks=4, width=64, moment_samples=128, threads=1)
    settings = quick if args.quick else dict(steps=400, batch=64)
    artifact = eq.train("color == red & uniform(size)", gen=generator, out=args.out,
                        **settings)
    images = artifact.sample(8, seed=0)
    print("samples:", tuple(images.shape), f"in [{images.min():.2f}, {images.max():.2f}]")
    # Loading needs the generator object again (it is not in any registry).
    again = eq.Sampler.load(args.out, gen=generator)
    print("reloaded, same samples:", torch.equal(again.sample(8, seed=0), images))


if __name__ == "__main__":
    main()
