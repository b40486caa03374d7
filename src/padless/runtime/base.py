"""The small interface every backend implements.

A runtime receives one planned batch as right-padded ``int64`` arrays (``rows × width``: token ids, an attention
mask of ones then zeros, and for text pairs the ``token_type_ids`` — each token's segment, None meaning all zeros)
and returns ``float32`` logits (``rows × num_labels``). It owns nothing else: tokenizing,
planning and post-processing are shared by all backends, so a new backend only has to be correct on padded batches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

# Defined below the runtimes (model loading and machine facts are lower layers); named here too, where backends
# and older callers look for them.
from padless.loader.folders import ModelInfo
from padless.machine import cpu_flags, usable_cores

__all__ = ["ModelInfo", "Runtime", "cpu_flags", "usable_cores"]


class Runtime(ABC):
    """One backend. Implementations must be deterministic for a given batch."""

    name: str = "base"

    @abstractmethod
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                token_type_ids: np.ndarray | None = None) -> np.ndarray:
        """Logits for a right-padded batch (``token_type_ids`` None: every token in segment 0)."""

    def warmup(self, max_rows: int = 8, max_width: int = 64) -> None:
        """Run a small forward pass so the first real request does not pay one-off start-up costs."""
        ids = np.ones((max_rows, max_width), dtype=np.int64)
        self.forward(ids, np.ones_like(ids))

    def describe(self) -> dict[str, Any]:
        """Backend name, precision and threads, for ``/info`` and benchmark reports."""
        return {"backend": self.name}
