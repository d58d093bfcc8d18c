"""Test-wide settings.

torch runs single-threaded in tests: on a 2-core machine where another process holds a core,
two threads were measured ~10x slower than one. Set here through the environment (read when
torch initialises) so that importing the test suite does not import torch.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("ENERGYQL_TEST_THREADS", "1"))
