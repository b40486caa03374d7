"""The matmul ceilings the bench divides by: measured per precision, and a backend's precision read off its dtype."""

from __future__ import annotations

import pytest
import torch

from padless.bench.peak import compute_precision, measure_matmul_peak


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
def test_peak_is_a_positive_rate(dtype: torch.dtype) -> None:
    assert measure_matmul_peak(64, repeats=2, dtype=dtype) > 0


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8])
def test_peak_on_cuda_is_the_gpus(dtype: torch.dtype) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cpu = measure_matmul_peak(256, repeats=2, dtype=dtype)
    # an 8192-wide product (the CUDA minimum) on a data-centre GPU outruns any CPU's 256-wide one many times over
    assert measure_matmul_peak(256, repeats=2, dtype=dtype, device="cuda") > 10 * cpu


def test_peak_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        measure_matmul_peak(0)


@pytest.mark.parametrize(("dtype", "precision"), [("float32", "float32"), ("bfloat16", "bfloat16"),
                                                   ("int8", "int8"), ("int8, bfloat16", "int8"),
                                                   ("int8, float32", "int8"), ("float16", "float16")])
def test_compute_precision(dtype: str, precision: str) -> None:
    assert compute_precision(dtype) == precision
