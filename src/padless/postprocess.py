"""Turn logits into labelled predictions, the way ``transformers.pipeline("text-classification")`` does.

The scoring function follows the model config: sigmoid for ``multi_label_classification`` or a single output,
softmax for ``single_label_classification`` or several outputs, identity for ``regression``. ``raw_scores`` skips it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Prediction:
    """The top label and its score, plus the ``top_k`` best ``(label, score)`` pairs, best first."""

    label: str
    score: float
    scores: tuple[tuple[str, float], ...] = field(default=())


def scoring_function(problem_type: str | None, num_labels: int) -> str:
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    return "softmax"


def _apply(logits: np.ndarray, function: str) -> np.ndarray:
    x = logits.astype(np.float64)
    if function == "sigmoid":
        return np.exp(-np.logaddexp(0.0, -x))  # 1/(1+e^-x) without overflow for very negative logits
    if function == "softmax":
        x = x - x.max(axis=-1, keepdims=True)
        e = np.exp(x)
        return e / e.sum(axis=-1, keepdims=True)
    return x


class PostProcessor:
    """Maps a ``rows × labels`` logit array to :class:`Prediction` objects."""

    def __init__(self, id2label: dict[int, str], problem_type: str | None) -> None:
        self.labels = [id2label[i] for i in range(len(id2label))]
        self.function = scoring_function(problem_type, len(self.labels))

    def __call__(self, logits: np.ndarray, *, top_k: int = 1, raw_scores: bool = False,
                 function: str | None = None) -> list[Prediction]:
        """``function`` ("softmax", "sigmoid", "none") overrides the model's own scoring function."""
        scores = logits.astype(np.float64) if raw_scores else _apply(logits, function or self.function)
        k = len(self.labels) if top_k == 0 else min(top_k, len(self.labels))
        order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
        out = []
        for row, idx in zip(scores, order):
            pairs = tuple((self.labels[int(i)], float(row[int(i)])) for i in idx)
            out.append(Prediction(label=pairs[0][0], score=pairs[0][1], scores=pairs))
        return out
