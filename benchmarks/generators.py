"""CPU cost of the BigGAN and diffusion generators: images/s, training-step time, peak memory.

    python benchmarks/generators.py [--threads 1] [--steps 10 25 50] [--batch 2]
                                    [--families ddim biggan] [--json PATH]

Random weights, real architectures: ``ddim`` is the UNet of google/ddpm-cifar10-32 (35.7 M
parameters, 32x32) decoded by K DDIM steps; ``biggan`` is BigGAN-deep-128 (ch 128). Per case:

- sample: ``decode`` of a batch without gradients (what sampling from an artifact costs);
- train step: ``decode`` with gradients to the latent plus the backward pass (what the
  generator adds to each reverse-KL step; the flow and the energies come on top);
- peak RSS: ``ru_maxrss`` of a fresh process that ran only that case, minus the same process's
  peak before the timed work (model built, inputs ready): the memory the work itself needed,
  as the C allocator holds it (freed blocks it keeps count too);
- autograd saved: the bytes of the distinct storages autograd keeps for the backward pass
  (exact, independent of the allocator): what gradient checkpointing bounds.

Each case runs in its own subprocess so that peaks do not carry over.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _ddim(steps: int, checkpointing: bool):
    import diffusers

    from energyql.generators.diffusion import DiffusionGenerator

    unet = diffusers.UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000)
    return DiffusionGenerator(unet, scheduler, steps=steps, checkpointing=checkpointing)


def _biggan():
    from energyql.generators.biggan import BigGAN, BigGANConfig, BigGANGenerator

    return BigGANGenerator(BigGAN(BigGANConfig(output_dim=128)).eval(), truncation=0.4)


def run_case(family: str, steps: int, batch: int, checkpointing: bool, threads: int) -> dict:
    """Measure one case in this process and return its figures."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    gen = _ddim(steps, checkpointing) if family == "ddim" else _biggan()
    params = sum(p.numel() for p in gen.parameters())
    z = torch.randn(batch, gen.latent_dim)
    with torch.no_grad():
        gen.decode(z[:1])  # warm-up: allocator and kernels
    before = _rss_mib()
    start = time.perf_counter()
    with torch.no_grad():
        gen.decode(z)
    sample_s = time.perf_counter() - start
    latent = z.clone().requires_grad_(True)
    saved: dict[int, int] = {}

    def keep(tensor):  # records what autograd holds for the backward pass, per storage
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        images = gen.decode(latent)
    images.mean().backward()
    train_s = time.perf_counter() - start
    return {"family": family, "steps": steps if family == "ddim" else None, "batch": batch,
            "checkpointing": checkpointing if family == "ddim" else None, "threads": threads,
            "parameters_m": round(params / 1e6, 1), "latent_dim": gen.latent_dim,
            "images_per_s": round(batch / sample_s, 3), "train_step_s": round(train_s, 2),
            "peak_rss_mib": round(_rss_mib() - before, 1),
            "autograd_saved_mib": round(sum(saved.values()) / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--families", nargs="+", default=["ddim", "biggan"],
                        choices=["ddim", "biggan"])
    parser.add_argument("--no-checkpointing-at", type=int, default=10,
                        help="also run this K without checkpointing (0: never)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, JSON to stdout
    args = parser.parse_args()
    if args.case:
        family, steps, checkpointing = args.case.split(",")
        print(json.dumps(run_case(family, int(steps), args.batch, checkpointing == "1",
                                  args.threads)))
        return
    cases = []
    if "ddim" in args.families:
        cases += [("ddim", k, True) for k in args.steps]
        if args.no_checkpointing_at:
            cases.append(("ddim", args.no_checkpointing_at, False))
    if "biggan" in args.families:
        cases.append(("biggan", 0, True))
    results = []
    for family, steps, checkpointing in cases:
        out = subprocess.run(
            [sys.executable, __file__, "--case", f"{family},{steps},{int(checkpointing)}",
             "--batch", str(args.batch), "--threads", str(args.threads)],
            capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(results, stream, indent=2)


if __name__ == "__main__":
    main()
