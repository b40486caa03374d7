"""``padless.machine.simd_flags``: the CPU flags a benchmark figure is recorded beside."""

from __future__ import annotations

from padless.machine import cpu_flags, simd_flags


def test_simd_flags_keeps_vector_and_matrix_flags_sorted() -> None:
    flags = frozenset({"fpu", "sse2", "sse4_2", "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni",
                       "amx_tile", "fma", "f16c", "ht", "lm"})
    assert simd_flags(flags) == ["amx_tile", "avx2", "avx512_bf16", "avx512_vnni", "avx512f", "avx_vnni", "f16c",
                                 "fma", "sse4_2"]


def test_unknown_flags_stay_unknown_and_this_cpus_are_a_subset() -> None:
    assert simd_flags(frozenset()) == []
    here = cpu_flags()
    got = simd_flags()
    if here is None:
        assert got is None
    else:
        assert got is not None and set(got) <= here
