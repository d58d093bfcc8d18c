"""FIR filter kernels shared by the StyleGAN2 network and the NVIDIA pickle converter."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def fir_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """Return the normalised separable 2-D FIR kernel of 1-D ``taps``, times ``gain``."""
    k = torch.tensor(list(taps), dtype=torch.float32)
    k = torch.outer(k, k) if k.ndim == 1 else k
    return k / k.sum() * gain
