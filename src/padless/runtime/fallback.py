"""Reduced precision with an exact fallback: the fast runtime answers every row, and the rows whose decision it
cannot be trusted with are recomputed by the exact (fp32) runtime.

Contract: ``FallbackRuntime(fast, exact, margin).forward`` runs ``fast`` on the whole batch, then re-runs through
``exact`` every row whose decision margin (:func:`decision_margin`) is below ``margin`` and puts those exact logits
in their place. Everything else is the fast runtime's output, unchanged.

Why this keeps labels: quantization moves each row's logits by some error, and a row's label can only flip when the
error in its margin reaches the margin itself. ``padless optimize`` measures that error on the calibration text
(:func:`flip_error`, its maximum over the sample) and stores it as ``margin``. So a row that the fast runtime finds
at least ``margin`` away from a tie keeps its label unless the error on it is larger than any seen on the sample,
and every closer row gets the exact answer. The error is measured, not proven, and depends on the batch (dynamic
int8 scales activations per batch): the accuracy gate, on labelled data the calibration never saw, is the check.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from padless.runtime.base import Runtime


def decision_margin(logits: np.ndarray) -> np.ndarray:
    """Per row, how far the decision is from a tie: top logit minus the runner-up (``|logit|`` for one output).

    A row with a NaN logit gets NaN, which compares below any margin (so it is recomputed).
    """
    if logits.shape[1] == 1:
        return np.abs(logits[:, 0])
    top2 = np.partition(logits, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def flip_error(reference: np.ndarray, variant: np.ndarray) -> np.ndarray:
    """Per row, the error that matters for the label: the largest change, between reference and variant, of the
    reference winner's lead over any other label (``|Δ logit|`` for one output). A label flips only when this
    reaches the row's margin."""
    if reference.shape[1] == 1:
        return np.abs(variant[:, 0] - reference[:, 0])
    rows = np.arange(len(reference))
    winner = reference.argmax(axis=1)
    lead_ref = reference[rows, winner][:, None] - reference
    lead_var = variant[rows, winner][:, None] - variant
    return np.abs(lead_var - lead_ref).max(axis=1)


class FallbackRuntime(Runtime):
    """``fast`` for every row; ``exact`` again for rows whose fast margin is below ``margin``. See the module doc."""

    def __init__(self, fast: Runtime, exact: Runtime, *, margin: float) -> None:
        if not margin >= 0:
            raise ValueError(f"the fallback margin must be a non-negative number, got {margin}")
        self.fast = fast
        self.exact = exact
        self.margin = float(margin)
        self.name = fast.name
        self.batch_overhead_tokens = fast.batch_overhead_tokens  # a call costs at least what the fast one does
        self.rows = 0  # rows answered, and how many of them the exact runtime recomputed (for /info and reports)
        self.recomputed = 0

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                token_type_ids: np.ndarray | None = None) -> np.ndarray:
        logits = self.fast.forward(input_ids, attention_mask, token_type_ids)
        redo = np.flatnonzero(~(decision_margin(logits) >= self.margin))
        if redo.size:
            # Rows are right-padded, so the recomputed rows need only their own longest length.
            width = max(1, int(attention_mask[redo].sum(axis=1).max()))
            types = None if token_type_ids is None else token_type_ids[redo, :width]
            logits[redo] = self.exact.forward(input_ids[redo, :width], attention_mask[redo, :width], types)
        self.rows += len(logits)
        self.recomputed += int(redo.size)
        return logits

    def warmup(self, max_rows: int = 8, max_width: int = 64) -> None:
        self.fast.warmup(max_rows, max_width)
        self.exact.warmup(max_rows, max_width)

    @property
    def recomputed_fraction(self) -> float:
        return self.recomputed / self.rows if self.rows else 0.0

    def describe(self) -> dict[str, Any]:
        fast = self.fast.describe()
        return {**fast, "dtype": f"{fast.get('dtype', '?')}, {self.exact.describe().get('dtype', '?')} fallback",
                "fallback": {"below_margin": round(self.margin, 4), "rows": self.rows, "recomputed": self.recomputed}}
