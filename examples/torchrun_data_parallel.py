"""Train on several processes with ``torchrun``: the global batch is split over the ranks.

Prints the torchrun command, then runs it (with ``--quick``: 2 CPU ranks, a few steps). Every
rank evaluates its share of each batch; DistributedDataParallel averages the gradients, and
rank 0 alone writes the artifact, log and report.

    python examples/torchrun_data_parallel.py --quick --out /tmp/ddp
    # on a GPU machine, one rank per GPU:
    #   torchrun --standalone --nproc-per-node 8 -m energyql run 'uniform(shape x color)' \\
    #       --gen shapes --device cuda --out runs/ddp
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/ddp", help="output folder")
    parser.add_argument("--quick", action="store_true", help="2 CPU ranks, a few steps")
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    # `python -m torch.distributed.run` is the `torchrun` script, from this interpreter.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={args.ranks}", "-m", "energyql", "run",
               "uniform(shape x color)", "--gen", "shapes", "--out", args.out]
    if args.quick:
        command += ["--steps", "4", "--batch", "16", "--warm-start", "128", "--samples", "64",
                    "--threads", "1"]
    print("torchrun", shlex.join(command[3:]))
    sys.exit(subprocess.run(command, check=False).returncode)


if __name__ == "__main__":
    main()
