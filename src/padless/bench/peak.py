"""A practical compute ceiling: the best dense matmul rate torch reaches on this machine, right now.

Model FLOPs are reported as a percentage of this figure. It is measured, not taken from a datasheet, so it already
reflects the thread setting, the BLAS library and whatever else is competing for the cores at the time.

Reduced-precision variants are held against the ceiling of their own arithmetic as well: ``bfloat16`` (a plain
matmul, where the CPU has native bf16) and ``int8`` (``torch._int_mm``, int8 × int8 → int32: the VNNI/AMX kernels an
int8 engine uses), so "% of peak" says how close each engine comes to what its precision can do here.

On a CUDA device the ceiling is the GPU's (fp32 without TF32, torch's default, as the models run), timed with the
device synchronised around a run of multiplies: one product of a size that fits the CPU takes microseconds there.
"""

from __future__ import annotations

import time

import torch

CUDA_MIN_SIZE = 8192  # smaller products leave an H200's tensor cores partly idle; the ceiling would read low
CUDA_PRODUCTS_PER_TIMING = 10


def peak_size_on(device: str, size: int) -> int:
    """The product width a peak on ``device`` is measured at: ``size``, at least ``CUDA_MIN_SIZE`` on CUDA."""
    return max(size, CUDA_MIN_SIZE) if device.startswith("cuda") else size


def measure_matmul_peak(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32,
                        device: str = "cpu") -> float:
    """GFLOP/s (GOP/s for int8) of the fastest of ``repeats`` timed ``size × size`` matmuls (2·size³ operations
    each), after one warm-up. ``dtype``: float32, bfloat16, float16 or int8. Uses torch's current thread setting.
    ``device``: ``cpu`` or ``cuda``; on CUDA the size is at least ``CUDA_MIN_SIZE`` and each timing covers
    ``CUDA_PRODUCTS_PER_TIMING`` products between two synchronisations.
    """
    if size < 1 or repeats < 1:
        raise ValueError("size and repeats must be positive")
    on_cuda = device.startswith("cuda")
    size = peak_size_on(device, size)
    products = CUDA_PRODUCTS_PER_TIMING if on_cuda else 1
    generator = torch.Generator().manual_seed(0)
    if dtype == torch.int8:
        # int8 operands, int32 accumulation; the size must be a multiple of 8 for the int8 kernels.
        size = max(8, size // 8 * 8)
        a = torch.randint(-128, 128, (size, size), generator=generator, dtype=torch.int8).to(device)
        b = torch.randint(-128, 128, (size, size), generator=generator, dtype=torch.int8).to(device)

        def multiply() -> None:
            torch._int_mm(a, b)
    else:
        a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
        b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
        out = torch.empty(size, size, dtype=dtype, device=device)

        def multiply() -> None:
            torch.matmul(a, b, out=out)

    def synchronize() -> None:
        if on_cuda:
            torch.cuda.synchronize(device)

    flops = 2.0 * size**3 * products
    # The warm-up pays for BLAS initialisation and thread-pool start-up (cuBLAS handles, kernel loading on a GPU),
    # which are not compute.
    multiply()
    synchronize()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(products):
            multiply()
        synchronize()
        best = min(best, time.perf_counter() - started)
    # Best, not mean: interference only ever slows a run, so the fastest run is closest to the machine's ceiling.
    return flops / best / 1e9


def compute_precision(dtype: str) -> str:
    """The arithmetic a backend's ``describe()["dtype"]`` does most of its work in: int8, bfloat16, float16 or
    float32 (an int8 IR's "int8, bfloat16" is int8: its matmuls are)."""
    for precision in ("int8", "bfloat16", "float16"):
        if precision in dtype:
            return precision
    return "float32"
