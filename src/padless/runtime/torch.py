"""PyTorch backend: ``AutoModelForSequenceClassification`` in inference mode with SDPA attention.

Threads default to every core the process may use (``os.sched_getaffinity``), not ``os.cpu_count()``, which over-
subscribes containers limited by cgroups or affinity.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from padless.errors import ModelError
from padless.runtime.base import ModelInfo, Runtime


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class TorchRuntime(Runtime):
    name = "torch"

    def __init__(self, path: str, info: ModelInfo, *, threads: int = 0) -> None:
        from transformers import AutoModelForSequenceClassification

        self.info = info
        self.threads = threads or usable_cores()
        torch.set_num_threads(self.threads)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, attn_implementation="sdpa", dtype=torch.float32
            )
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot load a sequence-classification model from {path}: {err}") from None
        self.model.eval()

    @torch.inference_mode()
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        out = self.model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
        return out.logits.float().numpy()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "dtype": "float32", "threads": self.threads, "attention": "sdpa"}
