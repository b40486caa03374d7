"""A deterministic runtime without weights, for server, load and planner tests.

Its logits are a pure function of each row's real tokens and their segments (never of the padding or of the other
rows in the batch), so batched output equals single-item output exactly — the property every real backend must
approximate.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from padless.runtime.base import ModelInfo, Runtime


class DummyRuntime(Runtime):
    name = "dummy"

    def __init__(self, info: ModelInfo, *, delay_per_token_s: float = 0.0, **_: Any) -> None:
        self.info = info
        self.delay_per_token_s = delay_per_token_s
        self.calls = 0

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                token_type_ids: np.ndarray | None = None) -> np.ndarray:
        self.calls += 1
        if self.delay_per_token_s:
            time.sleep(self.delay_per_token_s * input_ids.size)
        num_labels = len(self.info.id2label)
        out = np.zeros((input_ids.shape[0], num_labels), dtype=np.float32)
        label_axis = np.arange(1, num_labels + 1, dtype=np.int64)
        for row in range(input_ids.shape[0]):
            keep = attention_mask[row].astype(bool)
            real = input_ids[row][keep]
            # A token's segment counts too, so a pair differs from its texts run together (0 for single texts).
            segment = 0 if token_type_ids is None else token_type_ids[row][keep]
            digest = (real * 2654435761 + np.arange(real.size) * 97 + segment * 7919) % 1000003
            out[row] = ((digest.sum() * label_axis) % 2001 - 1000) / 250.0
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "dtype": "none", "threads": 0}
