"""How latent flows scale with the latent: parameters, memory and time per training sample.

    python benchmarks/flow_scaling.py [--threads 1] [--batch 4] [--repeats 3]
                                      [--latents 3x32x32 4x64x64 3x128x128 3x256x256]
                                      [--kinds dense conv] [--json PATH] [--markdown]

For each image-shaped latent and flow kind (both as ``energyql.flows.flow_config_for`` sizes
them: dense 8 x 256, conv 4 blocks per scale of 64 channels with up to 4 squeezes; ``--blocks``
and ``--width`` set other sizes), random
weights on CPU, one fresh subprocess per case so that memory peaks do not carry over:

- parameters: trainable ones; ``floats``: everything the flow allocates (its fixed rotations
  too), as the manifest bounds it (``FlowRecord.floats``);
- ``step_peak_mib``: the peak resident memory of one training step (forward with log-det,
  backward, AdamW step: activations, gradients, optimizer state) over the process's resident
  memory before it (flow built, noise drawn, freed heap returned with ``malloc_trim``, the
  peak reset through ``/proc/self/clear_refs``); ``before_mib`` is that baseline (Python,
  torch, the flow) and ``process_peak_mib`` the whole process's peak, building included;
- ``saved_mib``: the distinct storages autograd keeps for the backward pass, the flow's own
  weights excepted (exact, independent of the allocator);
- ``ms_per_sample``: median over ``--repeats`` of forward + backward time, over the batch.

A dense flow holds two ``dim x dim`` rotations per block, so it is measured only while they fit
(``--dense-max``, default 4,096 entries); above that the table gives its float count.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import resource
import statistics
import subprocess
import sys
import time

DEFAULT_LATENTS = ("3x32x32", "4x64x64", "3x128x128", "3x256x256")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _status_mib(field: str) -> float:
    """Return a /proc/self/status memory field (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak() -> float:
    """Return the resident MiB now, after giving freed heap back and resetting the peak."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    return _status_mib("VmRSS")


class _Shape:
    """A stand-in generator that only declares its latent (what flow_config_for reads)."""

    def __init__(self, shape: tuple[int, int, int]):
        self.latent_shape = shape
        self.latent_dim = math.prod(shape)
        self.id = "x".join(map(str, shape))


def _config(kind: str, shape: tuple[int, int, int], blocks: int | None = None,
            width: int | None = None):
    from energyql.flows import flow_config_for

    return flow_config_for(_Shape(shape), blocks, width, kind=kind, seed=1)


def _floats(config) -> int:
    from energyql.manifest import FlowRecord

    return FlowRecord(**config.to_dict()).floats()


def run_case(kind: str, shape: tuple[int, int, int], batch: int, repeats: int,
             blocks: int | None = None, width: int | None = None) -> dict:
    """Measure one flow in this process (call it in a fresh one)."""
    import torch

    from energyql.flows import LatentFlow

    config = _config(kind, shape, blocks, width)
    flow = LatentFlow(config)
    # Perturb the zero-initialised layers: an identity flow's backward is no cheaper, but a
    # trained one is what runs.
    with torch.no_grad():
        for p in flow.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    optimizer = torch.optim.AdamW([p for p in flow.parameters() if p.requires_grad], lr=1e-4)
    eps = torch.randn(batch, config.dim, generator=torch.Generator().manual_seed(0))
    weights = {t.untyped_storage().data_ptr()
               for t in list(flow.parameters()) + list(flow.buffers())}
    before = _reset_peak()

    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:  # activations, not the flow's own weights
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    def step(measure_saved: bool = False):
        optimizer.zero_grad(set_to_none=True)
        if measure_saved:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                z, logdet = flow(eps)
        else:
            z, logdet = flow(eps)
        (0.5 * z.pow(2).sum() - logdet.sum()).backward()

    step(measure_saved=True)
    optimizer.step()
    step_peak = _status_mib("VmHWM") - before
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return {"kind": kind, "shape": list(shape), "dim": config.dim, "batch": batch,
            "blocks": config.blocks, "width": config.width, "levels": config.levels,
            "parameters": sum(p.numel() for p in flow.parameters() if p.requires_grad),
            "floats": _floats(config),
            "before_mib": round(before, 1), "step_peak_mib": round(step_peak, 1),
            "process_peak_mib": round(_rss_mib(), 1),
            "saved_mib": round(sum(saved.values()) / 2**20, 1),
            "ms_per_sample": round(1000 * statistics.median(times) / batch, 2),
            "repeats": repeats}


def _parse(latent: str) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in latent.split("x"))
    return c, h, w


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latents", nargs="+", default=list(DEFAULT_LATENTS), help="CxHxW")
    parser.add_argument("--kinds", nargs="+", default=["dense", "conv"],
                        choices=["dense", "conv"])
    parser.add_argument("--blocks", type=int, default=None,
                        help="blocks (conv: per scale) instead of flow_config_for's size")
    parser.add_argument("--width", type=int, default=None,
                        help="subnet width (conv: channels) instead of flow_config_for's")
    parser.add_argument("--dense-max", type=int, default=4096,
                        help="largest latent a dense flow is built for")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # KIND,CxHxW (child)
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.case:
        kind, latent = args.case.split(",")
        print(json.dumps(run_case(kind, _parse(latent), args.batch, args.repeats, args.blocks,
                                  args.width)))
        return []
    rows = []
    for latent in args.latents:
        shape = _parse(latent)
        for kind in args.kinds:
            if kind == "dense" and math.prod(shape) > args.dense_max:
                config = _config(kind, shape, args.blocks, args.width)
                rows.append({"kind": kind, "shape": list(shape), "dim": config.dim,
                             "blocks": config.blocks, "width": config.width,
                             "floats": _floats(config), "skipped": "does not fit"})
                continue
            sizes = [f"--{name}={value}" for name, value in
                     (("blocks", args.blocks), ("width", args.width)) if value]
            child = subprocess.run(
                [sys.executable, __file__, "--case", f"{kind},{latent}", "--batch",
                 str(args.batch), "--repeats", str(args.repeats), "--threads",
                 str(args.threads), *sizes], capture_output=True, text=True, check=False)
            if child.returncode:
                rows.append({"kind": kind, "shape": list(shape), "dim": math.prod(shape),
                             "error": child.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    if args.markdown:
        print("| latent | dim | flow | parameters | floats | before MiB | step peak MiB "
              "| process peak MiB | autograd saved MiB | ms / sample | µs / sample / 1k dims |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            size = (f"{r['kind']} {r['blocks']}×{r['width']}"
                    + (f", {r['levels']} scales" if r["kind"] == "conv" else ""))
            latent = "×".join(map(str, r["shape"]))
            if "ms_per_sample" not in r:
                why = r.get("skipped") or r.get("error")
                print(f"| {latent} | {r['dim']:,} | {size} | | {r.get('floats', 0):,} | "
                      f"{why} | | | | | |")
                continue
            print(f"| {latent} | {r['dim']:,} | {size} | {r['parameters']:,} | "
                  f"{r['floats']:,} | {r['before_mib']:,} | {r['step_peak_mib']:,} | "
                  f"{r['process_peak_mib']:,} | "
                  f"{r['saved_mib']:,} | {r['ms_per_sample']:,} | "
                  f"{1000 * r['ms_per_sample'] / (r['dim'] / 1000):,.1f} |")
    else:
        print(json.dumps(rows, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"batch": args.batch, "threads": args.threads, "rows": rows}, handle,
                      indent=2)
    return rows


if __name__ == "__main__":
    main()
