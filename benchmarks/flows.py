"""Flows compared on one reverse-KL training step: FrEIA AllInOneBlock, zuko RealNVP, energyql's
spline flow and zuko's rational-quadratic NSF (the spline flow energyql used before its own).

    python benchmarks/flows.py [--dim 64] [--batch 64] [--blocks 8] [--width 256] [--threads 1]
                               [--steps 60] [--json PATH]

A step is: draw noise, sample the flow with its log-density, add a quadratic energy, backward,
AdamW step — what the trainer does minus the generator and the energies. FrEIA is energyql's
own ``LatentFlow`` (8 AllInOneBlocks with soft permutations, subnets of two hidden layers);
zuko is ``zuko.flows.RealNVP`` with the same depth and hidden widths, and the spline flow
energyql's ``LatentFlow`` of kind ``spline`` (the worlds' default; energyql.splines); zuko's
NSF has the same depth, bins, widths and half splits (``passes=2``) and samples through its
inverse, as energyql's first spline flow did. They are timed in
alternating rounds so that background load hits all alike; the median ms/step is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _freia(dim: int, blocks: int, width: int):
    from energyql.flows import FlowConfig, LatentFlow

    flow = LatentFlow(FlowConfig(dim=dim, blocks=blocks, width=width))

    def sample(eps):
        from energyql.flows import standard_normal_log_prob

        z, logdet = flow(eps)
        return z, standard_normal_log_prob(eps) - logdet

    return flow, sample


def _spline(dim: int, blocks: int, width: int):
    from energyql.flows import FlowConfig, LatentFlow, standard_normal_log_prob

    flow = LatentFlow(FlowConfig(dim=dim, blocks=blocks, width=width, kind="spline"))

    def sample(eps):
        z, logdet = flow(eps)
        return z, standard_normal_log_prob(eps) - logdet

    return flow, sample


def _zuko(dim: int, blocks: int, width: int):
    import zuko

    flow = zuko.flows.RealNVP(features=dim, transforms=blocks, hidden_features=(width, width))

    def sample(eps):
        # zuko samples by inverting its transform; rsample_and_log_prob draws its own noise,
        # so the given eps only sets the batch size.
        return flow().rsample_and_log_prob((eps.shape[0],))

    return flow, sample


def _zuko_nsf(dim: int, blocks: int, width: int):
    import zuko

    from energyql.flows import standard_normal_log_prob
    from energyql.manifest import SPLINE_BINS

    flow = zuko.flows.NSF(dim, transforms=blocks, bins=SPLINE_BINS,
                          hidden_features=(width, width), passes=2, randperm=True)

    def sample(eps):
        z, logdet = flow.transform().inv.call_and_ladj(eps)
        return z, standard_normal_log_prob(eps) - logdet

    return flow, sample


def time_steps(build, *, dim: int, batch: int, blocks: int, width: int, steps: int,
               rounds: int) -> list[list[float]]:
    """Return per-round lists of step times in seconds for one flow library."""
    import torch

    torch.manual_seed(0)
    flow, draw = build(dim, blocks, width)
    optimizer = torch.optim.AdamW(flow.parameters(), lr=1e-4)
    target_mean = torch.linspace(-1, 1, dim)

    def step():
        eps = torch.randn(batch, dim)
        z, log_q = draw(eps)
        log_p0 = -0.5 * z.pow(2).sum(1)
        energy = 0.5 * (z - target_mean).pow(2).sum(1)
        loss = (log_q - log_p0 + energy).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):  # warm-up: allocator, first-call overheads
        step()
    times = []
    for _ in range(rounds):
        this = []
        for _ in range(steps):
            began = time.perf_counter()
            step()
            this.append(time.perf_counter() - began)
        times.append(this)
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per library")
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    shape = dict(dim=args.dim, batch=args.batch, blocks=args.blocks, width=args.width)
    libraries = {"freia_allinone": _freia, "zuko_realnvp": _zuko, "energyql_spline": _spline,
                 "zuko_nsf": _zuko_nsf}
    samples: dict[str, list[float]] = {k: [] for k in libraries}
    for _ in range(args.rounds):
        for name, build in libraries.items():
            samples[name] += time_steps(build, steps=args.steps, rounds=1, **shape)[0]
    result = {
        "settings": {**shape, "threads": args.threads, "steps": args.steps * args.rounds,
                     "torch": torch.__version__},
        "ms_per_step": {k: round(1000 * statistics.median(v), 2) for k, v in samples.items()},
    }
    ms = result["ms_per_step"]
    result["zuko_over_freia"] = round(ms["zuko_realnvp"] / ms["freia_allinone"], 2)
    result["spline_over_freia"] = round(ms["energyql_spline"] / ms["freia_allinone"], 2)
    result["zuko_nsf_over_spline"] = round(ms["zuko_nsf"] / ms["energyql_spline"], 2)
    print(f"reverse-KL step, dim {args.dim}, batch {args.batch}, {args.blocks} blocks, width "
          f"{args.width}, {args.threads} thread(s), median of {args.steps * args.rounds} steps")
    for name, value in ms.items():
        print(f"  {name:16s} {value:8.2f} ms/step")
    print(f"  zuko / FrEIA     {result['zuko_over_freia']:8.2f}x")
    print(f"  spline / FrEIA   {result['spline_over_freia']:8.2f}x")
    print(f"  zuko NSF / spline {result['zuko_nsf_over_spline']:7.2f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
