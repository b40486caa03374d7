"""A practical compute ceiling: the best dense matmul rate torch reaches on this machine, right now.

Model FLOPs are reported as a percentage of this figure. It is measured, not taken from a datasheet, so it already
reflects the thread setting, the BLAS library and whatever else is competing for the cores at the time.
"""

from __future__ import annotations

import time

import torch


def measure_matmul_peak(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of the fastest of ``repeats`` timed ``size × size`` matmuls (2·size³ FLOPs each), after one warm-up.

    Uses torch's current thread setting.
    """
    if size < 1 or repeats < 1:
        raise ValueError("size and repeats must be positive")
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    flops = 2.0 * size**3
    # The warm-up pays for BLAS initialisation and thread-pool start-up, which are not compute.
    torch.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - started)
    # Best, not mean: interference only ever slows a run, so the fastest run is closest to the machine's ceiling.
    return flops / best / 1e9
