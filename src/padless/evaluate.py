"""Accuracy of a classifier on a labelled set: accuracy, macro-F1, and how many rows could not be scored."""

from __future__ import annotations

from typing import Any

from padless.datasets import LabelledSet
from padless.errors import ItemError


def evaluate(classifier: Any, data: LabelledSet) -> dict[str, Any]:
    """Score ``data`` with ``classifier.run`` and compare with its labels. Unscorable rows count as wrong."""
    results = classifier.run(data.texts)
    predicted = [None if isinstance(r, ItemError) else r.label for r in results]
    correct = sum(p == y for p, y in zip(predicted, data.labels))
    f1s = []
    for label in sorted(set(data.labels)):
        tp = sum(p == label and y == label for p, y in zip(predicted, data.labels))
        fp = sum(p == label and y != label for p, y in zip(predicted, data.labels))
        fn = sum(p != label and y == label for p, y in zip(predicted, data.labels))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {
        "eval_set": data.name,
        "rows": len(data),
        "accuracy": round(correct / len(data), 4) if len(data) else 0.0,
        "macro_f1": round(sum(f1s) / len(f1s), 4) if f1s else 0.0,
        "unscored": sum(p is None for p in predicted),
        "predicted": predicted,
    }
