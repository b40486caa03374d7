"""The small interface every backend implements.

A runtime receives one planned batch as right-padded ``int64`` arrays (``rows × width``: token ids and an attention
mask of ones then zeros) and returns ``float32`` logits (``rows × num_labels``). It owns nothing else: tokenizing,
planning and post-processing are shared by all backends, so a new backend only has to be correct on padded batches.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np


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


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What the engine needs to know about a classifier, read from its config."""

    id2label: dict[int, str]
    problem_type: str | None
    model_type: str
    hidden_size: int
    num_layers: int
    non_embedding_params: int  # for the FLOPs estimate 2·P·L + 4·L²·h·layers


class Runtime(ABC):
    """One backend. Implementations must be deterministic for a given batch."""

    name: str = "base"

    @abstractmethod
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits for a right-padded batch."""

    def warmup(self, max_rows: int = 8, max_width: int = 64) -> None:
        """Run a small forward pass so the first real request does not pay one-off start-up costs."""
        ids = np.ones((max_rows, max_width), dtype=np.int64)
        self.forward(ids, np.ones_like(ids))

    def describe(self) -> dict[str, Any]:
        """Backend name, precision and threads, for ``/info`` and benchmark reports."""
        return {"backend": self.name}
