"""Dense flow sizes against the shapes generator: what a flow of each (blocks, width) costs.

    python benchmarks/flow_sizing.py [--batch 256] [--rounds 5] [--threads 1]
                                     [--sizes 8x256 8x128 4x128 4x64] [--json PATH]

On the shapes world's generator (latent_dim 32, the shipped weights), at one batch:

- ``decode_ms``: ``decode(z)`` without gradients; ``decode_fb_ms``: ``decode(z)`` with
  gradients to ``z`` plus the backward pass (what the generator costs in a training step);
- per flow size: ``flow_ms`` (``flow(eps)`` without gradients, what sampling pays),
  ``flow_fb_ms`` (``flow(eps)`` with its log-det, then the backward pass to its parameters),
  ``overhead`` = (decode + flow) / decode (benchmarks/run.py's ``flow_overhead`` measures the
  same sum in one call) and ``train_share`` = flow_fb / decode_fb.

Random-weight flows (each at its perturbed, not its identity, initialisation makes no
difference to the time). All cases are timed in alternating rounds so background load hits
them alike; each figure is the median over rounds of the median of 3 calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

DEFAULT_SIZES = ("8x256", "8x128", "6x128", "4x128", "8x64", "6x64", "4x64", "4x32")


def _ms(fn, calls: int = 3) -> float:
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def measure(sizes, batch: int, rounds: int) -> dict:
    """Return the decode and per-size flow times (ms) on the shapes generator at ``batch``."""
    import torch

    from energyql.flows import FlowConfig, LatentFlow
    from energyql.worlds.shapes.generator import load as load_generator

    generator = load_generator().eval().requires_grad_(False)
    dim = generator.latent_dim
    eps = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0))
    flows = {}
    for size in sizes:
        blocks, width = (int(v) for v in size.split("x"))
        flows[size] = LatentFlow(FlowConfig(dim=dim, blocks=blocks, width=width, seed=1))

    def decode():
        with torch.no_grad():
            generator.decode(eps)

    def decode_fb():
        z = eps.clone().requires_grad_(True)
        generator.decode(z).sum().backward()

    def flow_fwd(flow):
        with torch.no_grad():
            flow(eps)

    def flow_fb(flow):
        flow.zero_grad(set_to_none=True)
        z, logdet = flow(eps)
        (z.pow(2).sum() - logdet.sum()).backward()

    cases = {"decode": decode, "decode_fb": decode_fb}
    for size, flow in flows.items():
        cases[f"{size}/flow"] = lambda f=flow: flow_fwd(f)
        cases[f"{size}/flow_fb"] = lambda f=flow: flow_fb(f)
    for fn in cases.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name].append(_ms(fn))
    med = {name: statistics.median(values) for name, values in times.items()}
    out: dict = {"batch": batch, "rounds": rounds, "latent_dim": dim,
                 "decode_ms": round(med["decode"], 2), "decode_fb_ms": round(med["decode_fb"], 2),
                 "sizes": {}}
    for size, flow in flows.items():
        f, fb = med[f"{size}/flow"], med[f"{size}/flow_fb"]
        out["sizes"][size] = {
            "parameters": sum(p.numel() for p in flow.parameters() if p.requires_grad),
            "flow_ms": round(f, 2), "flow_fb_ms": round(fb, 2),
            "overhead": round((med["decode"] + f) / med["decode"], 3),
            "train_share": round(fb / med["decode_fb"], 3)}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES),
                        help="BLOCKSxWIDTH, e.g. 8x256")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = measure(args.sizes, args.batch, args.rounds)
    out["threads"] = args.threads
    print(f"shapes decode, batch {out['batch']}: {out['decode_ms']} ms "
          f"(with backward to z: {out['decode_fb_ms']} ms)")
    print(f"{'size':>7} {'params':>8} {'flow ms':>8} {'overhead':>9} {'fwd+bwd ms':>11} "
          f"{'train share':>12}")
    for size, row in out["sizes"].items():
        print(f"{size:>7} {row['parameters']:>8} {row['flow_ms']:>8} {row['overhead']:>9} "
              f"{row['flow_fb_ms']:>11} {row['train_share']:>12}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=2)
    return out


if __name__ == "__main__":
    main()
