"""Every script in examples/ runs with --quick and writes what it says (as a user runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# (script, files it must write under --out, a line its output must contain). Scripts over
# ~20 s on one thread are marked slow (they still run in CI).
CASES = [
    pytest.param("card_expression.py", ["report.md", "report.html", "curves.png"],
                 "smiling men (drawn): base",
                 marks=pytest.mark.slow),
    ("compose_in_python.py", ["report.md", "stage2.png"], "stages: 2"),
    ("iterative_control.py", ["red/report.md", "red-shapes/report.md", "red-shapes/stage2.png"],
     "canonical: color == red | then uniform(shape)"),
    ("debias_custom_dist.py", ["report.md", "hist_size.png"], "(target small=0.3)"),
    ("conditional_sweep.py", ["my-sweep.png", "samples.png"],
     "outside the range: context value x=1 is outside the trained range 0.3..0.7"),
    ("slider_sweep.py", ["my-slider-sweep.png", "report.md"],
     "outside the range: context value p=0.95 is outside the trained range 0.1..0.9"),
    ("sampler_in_torch.py", ["manifest.json", "log.jsonl"], "forward(eps): (4, 3, 32, 32)"),
    ("custom_generator.py", ["manifest.json"], "reloaded, same samples: True"),
    pytest.param("torchrun_data_parallel.py", ["report.md", "log.jsonl"],
                 "torchrun --standalone --nproc-per-node=2 -m energyql run",
                 marks=pytest.mark.slow),
]


def test_every_example_is_tested():
    tested = {case.values[0] if hasattr(case, "values") else case[0] for case in CASES}
    assert tested == {path.name for path in EXAMPLES.glob("*.py")}


@pytest.mark.parametrize("script, files, expected", CASES)
def test_example_runs_quick(script, files, expected, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick", "--out", str(out)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert expected in result.stdout, result.stdout[-3000:]
    for name in files:
        assert (out / name).is_file(), f"{script} did not write {name}"
