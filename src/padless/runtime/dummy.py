"""A deterministic runtime without weights, for server, load and planner tests.

Its logits are a pure function of each row's real tokens and their segments (never of the padding or of the other
rows in the batch), so batched output equals single-item output exactly — the property every real backend must
approximate. For the embed task (``info.embedding`` set) a row is a ``D``-vector (``D``: the folder's dimension, else
``hidden_size``, else 8) seeded by the same digest, unit-length when the folder normalises.
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
        embedding = self.info.embedding
        if embedding is not None:
            dim = embedding.dimension or self.info.hidden_size or 8
            vectors = np.zeros((input_ids.shape[0], dim), dtype=np.float32)
            for row in range(input_ids.shape[0]):
                seed = int(self._digest(input_ids, attention_mask, token_type_ids, row))
                vectors[row] = np.random.default_rng(seed).standard_normal(dim)
            if embedding.normalize:
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            return vectors
        num_labels = len(self.info.id2label)
        out = np.zeros((input_ids.shape[0], num_labels), dtype=np.float32)
        label_axis = np.arange(1, num_labels + 1, dtype=np.int64)
        for row in range(input_ids.shape[0]):
            out[row] = ((self._digest(input_ids, attention_mask, token_type_ids, row) * label_axis) % 2001
                        - 1000) / 250.0
        return out

    @staticmethod
    def _digest(input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None,
                row: int) -> np.int64:
        """A row's digest: of its real tokens, their positions and their segments only."""
        keep = attention_mask[row].astype(bool)
        real = input_ids[row][keep]
        # A token's segment counts too, so a pair differs from its texts run together (0 for single texts).
        segment = 0 if token_type_ids is None else token_type_ids[row][keep]
        return np.int64(((real * 2654435761 + np.arange(real.size) * 97 + segment * 7919) % 1000003).sum())

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "dtype": "none", "threads": 0}
