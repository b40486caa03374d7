"""The small interface every backend implements.

A runtime receives one planned batch as right-padded ``int64`` arrays (``rows × width``: token ids, an attention
mask of ones then zeros, and for text pairs the ``token_type_ids`` — each token's segment, None meaning all zeros)
and returns ``float32`` logits (``rows × num_labels``), or for the embed task (``info.embedding`` set) the pooled,
optionally normalised vectors (``rows × D``), pooling and normalisation computed inside the backend's graph. It owns
nothing else: tokenizing,
planning and post-processing are shared by all backends, so a new backend only has to be correct on padded batches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from padless.errors import ModelError

# Defined below the runtimes (model loading and machine facts are lower layers); named here too, where backends
# and older callers look for them.
from padless.loader.folders import ModelInfo
from padless.machine import cpu_flags, usable_cores
from padless.planner import BATCH_OVERHEAD_TOKENS

__all__ = ["GRAPH_INPUTS", "Feed", "ModelInfo", "Runtime", "check_graph_inputs", "cpu_flags", "graph_feed",
           "usable_cores"]

# What an exported graph (ONNX file, OpenVINO IR) may take; token_type_ids only for models with two segment types.
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# One padded batch as forward() takes it: input_ids, attention_mask, token_type_ids (None: every token in segment 0).
Feed = tuple[np.ndarray, np.ndarray, np.ndarray | None]


class Runtime(ABC):
    """One backend. Implementations must be deterministic for a given batch."""

    name: str = "base"
    # Batch widths the planner should round up to (1: exact widths). A backend sets more only where measured
    # faster: padding costs compute on every backend whose kernels are not tiled (torch/ONNX fp32 lost 4-8% at 16).
    width_multiple: int = 1
    # Batches this runtime computes at once (OpenVINO's streams, each on its share of the threads): forward_many
    # keeps that many in flight. 1 everywhere else.
    streams: int = 1
    # The fixed cost of one forward call in tokens of work: the planner's price for cutting one more batch (see
    # padless.planner). On a CPU a call costs about as much as a few dozen tokens; a GPU computes a token in
    # microseconds but spends about as long launching a call's kernels as computing thousands of tokens.
    batch_overhead_tokens: int = BATCH_OVERHEAD_TOKENS

    @abstractmethod
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                token_type_ids: np.ndarray | None = None) -> np.ndarray:
        """Logits (embed task: vectors) for a right-padded batch (``token_type_ids`` None: every token in segment
        0)."""

    def forward_many(self, batches: Iterable[Feed]) -> list[np.ndarray]:
        """Logits of every batch, in the order given. Here one after another; a runtime with several streams runs
        them concurrently (the offline engine hands it a whole plan, the costliest batches first)."""
        return [self.forward(*batch) for batch in batches]

    def warmup(self, max_rows: int = 8, max_width: int = 64) -> None:
        """Run a small forward pass so the first real request does not pay one-off start-up costs."""
        ids = np.ones((max_rows, max_width), dtype=np.int64)
        self.forward(ids, np.ones_like(ids))

    def describe(self) -> dict[str, Any]:
        """Backend name, precision and threads, for ``/info`` and benchmark reports."""
        return {"backend": self.name}


def check_graph_inputs(names: Sequence[str], file: Path) -> None:
    """Refuse a graph whose inputs are not padless's (:data:`GRAPH_INPUTS`, ``input_ids`` at least)."""
    if set(names) - set(GRAPH_INPUTS) or "input_ids" not in names:
        raise ModelError(f"{file} has inputs {list(names)}; padless expects input_ids, attention_mask and optionally "
                         "token_type_ids")


def graph_feed(names: Sequence[str], file: Path, input_ids: np.ndarray, attention_mask: np.ndarray,
               token_type_ids: np.ndarray | None) -> dict[str, np.ndarray]:
    """The feed for a graph with inputs ``names``: segments as zeros when none are given, and a ModelError for real
    segments (a text pair) given to a graph without that input."""
    feed: dict[str, np.ndarray] = {"input_ids": input_ids}
    if "attention_mask" in names:
        feed["attention_mask"] = attention_mask
    if "token_type_ids" in names:
        feed["token_type_ids"] = np.zeros_like(input_ids) if token_type_ids is None else token_type_ids
    elif token_type_ids is not None and token_type_ids.any():
        # Scoring a pair without its segments would silently compute something else.
        raise ModelError(f"{file} was made without token_type_ids, so it cannot score text pairs; make it again "
                         "(delete the file, or rerun padless optimize)")
    return feed
