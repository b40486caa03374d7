"""What this machine offers a backend: the cores this process may use and the CPU's feature flags; and the
description of the machine that a benchmark figure is recorded beside."""

from __future__ import annotations

import os
import platform
import time
from functools import cache
from typing import Any


def usable_cores() -> int:
    """Cores this process may use (``os.sched_getaffinity``), not ``os.cpu_count()``, which over-subscribes
    containers limited by cgroups or affinity."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo``, or None where that cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return None


# The flags that change what a benchmark measures here: vector width, int8 and bf16 dot products, matrix tiles.
_SIMD_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4")


def simd_flags(flags: frozenset[str] | None = None) -> list[str] | None:
    """The SIMD and matrix flags among ``flags`` (default: this CPU's), sorted: what a benchmark figure is recorded
    beside, since bf16 and int8 gains differ 2x between CPUs of one kind. None where the flags are unknown."""
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return None
    return sorted(f for f in flags if f.startswith(_SIMD_PREFIXES) or "vnni" in f)


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (emulated bf16 is slower than fp32, so it is never chosen)."""
    flags = cpu_flags() or frozenset()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_amx() -> bool:
    """True when the CPU has AMX tiles for bf16 or int8 (Intel Sapphire Rapids and later)."""
    flags = cpu_flags() or frozenset()
    return "amx_tile" in flags and ("amx_bf16" in flags or "amx_int8" in flags)


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo``; where that cannot be read, what :mod:`platform` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict[str, Any]:
    """The machine and software a benchmark's figures were measured on: CPU name and SIMD flags, usable and total
    cores, the GPU torch sees (or None), torch's thread count, and the versions of torch, transformers and Python."""
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cpu_flags": simd_flags(), "usable_cores": usable_cores(), "cpu_count": os.cpu_count(),
            "gpu": gpu, "torch": torch.__version__,
            "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform()}


@cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library is not glibc."""
    import ctypes
    import ctypes.util

    if platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def return_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim(0)``; a no-op elsewhere). Costs about
    a millisecond or two (up to 8 ms seen) on 2 cores with a model loaded: call it through :class:`HeapTrimmer`."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class HeapTrimmer:
    """:func:`return_free_memory` at most once per ``interval_s`` of calls to :meth:`tick`.

    A model's batches of ever-changing shapes leave glibc's heap fragmented, and the pages it frees stay resident:
    without this, an embed job's peak memory on torch grew by about 10 MiB per 1,000 rows; trimmed between batches
    at most twice a second, it stays flat and the throughput is unchanged."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.last = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            return_free_memory()
            self.last = time.monotonic()
