"""The accuracy gate: a variant ships only if it matches the fp32 reference on labelled data.

:func:`compare` scores the reference's and the variant's logits on the same labelled rows and reports accuracy and
macro-F1 of each, the change in accuracy (points), label agreement, and max / mean |Δ logit|. :class:`GateConfig`
holds the thresholds: by default a variant may lose at most 0.5 points of accuracy **and** must agree with the
reference on at least 99% of labels. Rows neither model could score (too long with ``truncate=false``) count as wrong
for both and are left out of the logit statistics.

Accuracy is always judged against the fp32 reference. Agreement (and |Δ logit|) says whether a variant computes the
same function as the model it was made from: for a quantized or converted variant of the reference that is the
reference; for a pruned or distilled student, which by design is another function, it is the student's own torch
fp32 (``agreement_reference``), so the gate catches what int8 or bf16 did to the student, and the student's
agreement with the reference is reported beside it. A student is thus admitted on its labelled accuracy: a 50%-pruned
student agreed with the reference on 93% of labels here at 0.7-0.8 points of accuracy lost, and the reference
agreement half would refuse every such student whatever accuracy limit the user sets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from padless import datasets
from padless.errors import ConfigError, InputError


@dataclass(frozen=True, kw_only=True)
class GateConfig:
    """Thresholds a variant must meet against the fp32 reference."""

    max_accuracy_drop: float = 0.5  # points of accuracy (0.5 = half a percentage point)
    min_agreement: float = 0.99  # share of rows whose top label equals the reference's

    def validate(self) -> None:
        if not 0 <= self.max_accuracy_drop <= 100:
            raise ConfigError(f"max_accuracy_drop is in points (0..100), got {self.max_accuracy_drop}")
        if not 0 <= self.min_agreement <= 1:
            raise ConfigError(f"min_agreement is a share (0..1), got {self.min_agreement}")


def _macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    f1s = []
    for label in np.unique(gold):
        tp = int(((pred == label) & (gold == label)).sum())
        fp = int(((pred == label) & (gold != label)).sum())
        fn = int(((pred != label) & (gold == label)).sum())
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def _predictions(logits: np.ndarray) -> np.ndarray:
    pred = np.where(np.isnan(logits).any(axis=1), -1, np.nan_to_num(logits, nan=-np.inf).argmax(axis=1))
    return pred.astype(np.int64)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows whose top labels are equal (1.0 for no rows)."""
    return float((a == b).mean()) if len(a) else 1.0


def compare(reference: np.ndarray, variant: np.ndarray, gold: np.ndarray, gate: GateConfig, *,
            agreement_reference: np.ndarray | None = None, agreement_of: str = "") -> dict[str, Any]:
    """Gate report for two ``rows × labels`` logit arrays against gold label ids (``-1``: unscored row).

    ``agreement_reference``: the logits agreement and |Δ logit| are measured against instead of ``reference`` (a
    student's own fp32, named by ``agreement_of``); accuracy is still measured against ``reference``."""
    gate.validate()
    own = reference if agreement_reference is None else agreement_reference
    if reference.shape != variant.shape or own.shape != variant.shape or len(gold) != len(reference):
        raise InputError("reference, variant and labels must have the same rows")
    ref_pred, var_pred, own_pred = _predictions(reference), _predictions(variant), _predictions(own)
    ref_acc = float((ref_pred == gold).mean()) if len(gold) else 0.0
    var_acc = float((var_pred == gold).mean()) if len(gold) else 0.0
    agree = _agreement(own_pred, var_pred)
    scored = ~(np.isnan(own).any(axis=1) | np.isnan(variant).any(axis=1))
    delta = np.abs(own[scored] - variant[scored]) if scored.any() else np.zeros((1, 1))
    drop = (ref_acc - var_acc) * 100
    reasons = []
    if drop > gate.max_accuracy_drop + 1e-9:
        reasons.append(f"loses {drop:.2f} points of accuracy (limit {gate.max_accuracy_drop:g})")
    if agree < gate.min_agreement - 1e-12:
        reasons.append(f"agrees on {agree:.2%} of labels{f' with {agreement_of}' if agreement_of else ''} "
                       f"(needs {gate.min_agreement:.0%})")
    extra = {} if agreement_reference is None else {
        "agreement_of": agreement_of,
        "reference_agreement": round(_agreement(ref_pred, var_pred), 4)}
    return {
        "rows": int(len(gold)),
        "reference_accuracy": round(ref_acc, 4),
        "variant_accuracy": round(var_acc, 4),
        "accuracy_change_points": round(-drop, 2) + 0.0,  # + 0.0 turns -0.0 into 0.0
        "reference_macro_f1": round(_macro_f1(ref_pred, gold), 4),
        "variant_macro_f1": round(_macro_f1(var_pred, gold), 4),
        "agreement": round(agree, 4),
        **extra,
        "max_abs_logit_diff": float(delta.max()),
        "mean_abs_logit_diff": float(delta.mean()),
        "gate": asdict(gate),
        "passed": not reasons,
        "reasons": reasons,
    }


def label_ids(labels: list[Any], label_names: list[str]) -> np.ndarray:
    """Map gold labels (names, or integer ids as numbers or strings) to the model's label ids."""
    by_name = {name: i for i, name in enumerate(label_names)}
    by_lower = {name.lower(): i for i, name in enumerate(label_names)}
    out = []
    for row, value in enumerate(labels):
        if isinstance(value, str) and value in by_name:
            out.append(by_name[value])
        elif isinstance(value, str) and value.lower() in by_lower:
            out.append(by_lower[value.lower()])
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(label_names):
            out.append(int(value))
        elif isinstance(value, str) and value.strip().isdigit() and int(value) < len(label_names):
            out.append(int(value))
        else:
            raise InputError(f"eval row {row}: label {value!r} is not one of the model's labels "
                             f"({', '.join(label_names)}) or their ids")
    return np.asarray(out, dtype=np.int64)


def load_eval(name_or_file: str, *, text_column: str = "text", label_column: str = "label") -> datasets.LabelledSet:
    """A named eval set (``padless.datasets.EVAL_SETS``) or a CSV/JSONL/Parquet file with text and label columns."""
    if name_or_file in datasets.EVAL_SETS:
        return datasets.load(name_or_file)
    if not Path(name_or_file).exists():
        raise InputError(f"eval set {name_or_file!r} is neither a named set ({', '.join(datasets.EVAL_SETS)}) "
                         "nor a file")
    from padless.fileio import Reader, detect_format

    fmt = detect_format(name_or_file, None)
    if fmt == "txt":
        raise InputError("an eval file needs text and label columns: use CSV, JSONL or Parquet")
    texts: list[str] = []
    labels: list[Any] = []
    for i, row in enumerate(Reader(name_or_file, fmt, text_column).rows()):
        if row.error or not isinstance(row.text, str):
            raise InputError(f"eval row {i}: {row.error or 'no text'}")
        if label_column not in row.columns or row.columns[label_column] in (None, ""):
            raise InputError(f"eval row {i}: no {label_column!r} value")
        texts.append(row.text)
        labels.append(row.columns[label_column])
    if not texts:
        raise InputError(f"eval file {name_or_file} has no rows")
    return datasets.LabelledSet(name=Path(name_or_file).name, texts=texts, labels=labels)
