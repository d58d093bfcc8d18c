"""Test-wide settings.

torch runs single-threaded in tests: on a 2-core machine where another process holds a core,
two threads were measured ~10x slower than one. Set here through the environment (read when
torch initialises) so that importing the test suite does not import torch.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("ENERGYQL_TEST_THREADS", "1"))

# pytest-xdist starts its workers with COLUMNS=80; the CLI's rich consoles read COLUMNS once,
# when energyql.cli is first imported, and would then wrap every table at 80 columns whatever
# a test passes in its environment. Unset here, as in a plain pytest run, the width is read
# from the environment at each print (tests that print tables pass COLUMNS themselves).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)

# The end-to-end training files first: under pytest-xdist (the README runs `-n 2`;
# pyproject's addopts add `--dist loadfile --no-loadscope-reorder`) each file is one unit of
# work, handed out in this order, so both workers start training at once and the many short
# files fill in after (long units first balance two workers best: 2,107 s for 4,103 s of
# CPU on 2026-12-07).
_FIRST = ("tests/e2e/test_portraits_runs.py", "tests/e2e/test_shapes_runs.py",
          "tests/e2e/test_shapes_more_runs.py", "tests/e2e/test_stylegan2_run.py")


def pytest_collection_modifyitems(config, items):
    """Order the end-to-end files first (the rest keep their order)."""
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return _FIRST.index(path) if path in _FIRST else len(_FIRST)

    items.sort(key=rank)
