"""Data-parallel training under torchrun (gloo, 2 CPU processes) matches one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from energyql.distributed import Group

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_shards_cover_a_batch_in_rank_order():
    rows = [list(range(10))[Group(r, 3).shard(10)] for r in range(3)]
    assert rows == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def _run(out: Path, ranks: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(WORKER), str(out)] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={ranks}", str(WORKER), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_ranks_reach_the_single_process_parameters_and_figures(tmp_path):
    _run(tmp_path / "one", 1)
    _run(tmp_path / "two", 2)
    assert (tmp_path / "two" / "world.txt").read_text() == "2"
    one = torch.load(tmp_path / "one" / "flow.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "flow.pt", weights_only=True)
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), key
    assert json.loads((tmp_path / "one" / "eval.json").read_text()) == \
        json.loads((tmp_path / "two" / "eval.json").read_text())
