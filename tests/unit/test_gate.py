"""The accuracy gate's arithmetic and the eval-set loader (pure: logits are made up, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from padless.errors import ConfigError, InputError
from padless.optimize.gate import GateConfig, compare, label_ids, load_eval


def _logits(pred: np.ndarray) -> np.ndarray:
    """Two-label logits whose argmax is ``pred``, with margin 1."""
    out = np.zeros((len(pred), 2), dtype=np.float32)
    out[np.arange(len(pred)), pred] = 1.0
    return out


@pytest.fixture
def case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, size=1000)
    ref_pred = gold.copy()
    ref_pred[:150] = 1 - ref_pred[:150]  # the reference is 85% accurate
    return gold, ref_pred


def test_the_reference_passes_against_itself(case: tuple[np.ndarray, np.ndarray]) -> None:
    gold, ref_pred = case
    report = compare(_logits(ref_pred), _logits(ref_pred), gold, GateConfig())
    assert report["passed"] and report["reasons"] == []
    assert report["agreement"] == 1.0 and report["max_abs_logit_diff"] == 0.0
    assert report["reference_accuracy"] == report["variant_accuracy"] == 0.85
    assert report["accuracy_change_points"] == 0.0


def test_flipping_correct_rows_costs_accuracy_and_agreement(case: tuple[np.ndarray, np.ndarray]) -> None:
    gold, ref_pred = case
    var_pred = ref_pred.copy()
    var_pred[150:170] = 1 - var_pred[150:170]  # 20 correct rows become wrong: -2 points, 98% agreement
    report = compare(_logits(ref_pred), _logits(var_pred), gold, GateConfig())
    assert report["variant_accuracy"] == 0.83
    assert report["accuracy_change_points"] == -2.0
    assert report["agreement"] == 0.98
    assert not report["passed"]
    assert any("loses 2.00 points" in r for r in report["reasons"])
    assert any("agrees on 98.00%" in r for r in report["reasons"])


def test_disagreement_that_does_not_change_accuracy_still_fails_on_agreement(
        case: tuple[np.ndarray, np.ndarray]) -> None:
    gold, ref_pred = case
    var_pred = ref_pred.copy()
    var_pred[140:160] = 1 - var_pred[140:160]  # 10 wrong rows fixed, 10 right rows broken: accuracy unchanged
    report = compare(_logits(ref_pred), _logits(var_pred), gold, GateConfig())
    assert report["accuracy_change_points"] == 0.0 and report["agreement"] == 0.98
    assert report["reasons"] == ["agrees on 98.00% of labels (needs 99%)"]


def test_thresholds_are_options(case: tuple[np.ndarray, np.ndarray]) -> None:
    gold, ref_pred = case
    var_pred = ref_pred.copy()
    var_pred[150:170] = 1 - var_pred[150:170]
    loose = GateConfig(max_accuracy_drop=2.0, min_agreement=0.98)
    assert compare(_logits(ref_pred), _logits(var_pred), gold, loose)["passed"]
    assert compare(_logits(ref_pred), _logits(var_pred), gold, GateConfig(max_accuracy_drop=1.99,
                                                                          min_agreement=0.98))["passed"] is False


def test_a_student_is_judged_on_accuracy_against_the_reference_and_agreement_with_its_own_fp32(
        case: tuple[np.ndarray, np.ndarray]) -> None:
    gold, ref_pred = case
    student = ref_pred.copy()
    student[100:170] = 1 - student[100:170]  # another model: 50 wrong rows fixed, 20 right rows broken; 93% agreement
    quantized = student.copy()
    quantized[500:505] = 1 - quantized[500:505]  # what int8 did to the student: 5 more flips
    report = compare(_logits(ref_pred), _logits(quantized), gold, GateConfig(max_accuracy_drop=1.0),
                     agreement_reference=_logits(student), agreement_of="student-torch-fp32")
    # against the reference's 85%: +5 points fixed, -2 broken by the student, -0.5 by its int8
    assert report["variant_accuracy"] == 0.875 and report["accuracy_change_points"] == 2.5
    assert report["agreement"] == 0.995 and report["agreement_of"] == "student-torch-fp32"
    assert report["reference_agreement"] == pytest.approx(1 - 75 / 1000)
    assert report["passed"], report["reasons"]
    # the agreement half still catches damage to the student, and says with what
    damaged = student.copy()
    damaged[500:520] = 1 - damaged[500:520]
    report = compare(_logits(ref_pred), _logits(damaged), gold, GateConfig(max_accuracy_drop=5.0),
                     agreement_reference=_logits(student), agreement_of="student-torch-fp32")
    assert report["reasons"] == ["agrees on 98.00% of labels with student-torch-fp32 (needs 99%)"]
    # and accuracy is the reference's, not the student's: a student that loses points fails on them
    worse = ref_pred.copy()
    worse[150:170] = 1 - worse[150:170]
    report = compare(_logits(ref_pred), _logits(worse), gold, GateConfig(), agreement_reference=_logits(worse))
    assert report["agreement"] == 1.0 and report["reasons"] == ["loses 2.00 points of accuracy (limit 0.5)"]


def test_logit_statistics_ignore_unscored_rows() -> None:
    ref = np.array([[0.0, 1.0], [np.nan, np.nan], [2.0, 0.0]], dtype=np.float32)
    var = np.array([[0.0, 1.5], [np.nan, np.nan], [2.0, -0.5]], dtype=np.float32)
    report = compare(ref, var, np.array([1, 0, 0]), GateConfig())
    assert report["max_abs_logit_diff"] == pytest.approx(0.5)
    assert report["mean_abs_logit_diff"] == pytest.approx(0.25)
    assert report["reference_accuracy"] == pytest.approx(2 / 3, abs=1e-4)  # the unscored row counts as wrong


@pytest.mark.parametrize("gate", [GateConfig(max_accuracy_drop=-1), GateConfig(min_agreement=1.5)])
def test_impossible_thresholds_are_refused(gate: GateConfig) -> None:
    with pytest.raises(ConfigError):
        gate.validate()


def test_label_ids_accept_names_ids_and_digit_strings() -> None:
    names = ["negative", "positive"]
    assert label_ids(["positive", "NEGATIVE", 1, "0"], names).tolist() == [1, 0, 1, 0]
    with pytest.raises(InputError, match="label 'neutral' is not one of the model's labels"):
        label_ids(["neutral"], names)
    with pytest.raises(InputError):
        label_ids([2], names)


def test_load_eval_reads_csv_and_jsonl(tmp_path: Path) -> None:
    csv_file = tmp_path / "e.csv"
    csv_file.write_text("review,gold\ngreat,positive\n\"awful, truly\",negative\n")
    data = load_eval(str(csv_file), text_column="review", label_column="gold")
    assert data.texts == ["great", "awful, truly"] and data.labels == ["positive", "negative"]
    jsonl = tmp_path / "e.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in [("fine", 1), ("bad", 0)]) + "\n")
    assert load_eval(str(jsonl)).labels == [1, 0]


def test_load_eval_names_what_is_missing(tmp_path: Path) -> None:
    bad = tmp_path / "e.csv"
    bad.write_text("text\nhello\n")
    with pytest.raises(InputError, match="no 'label' value"):
        load_eval(str(bad))
    with pytest.raises(InputError, match="neither a named set"):
        load_eval(str(tmp_path / "missing.csv"))
    assert len(load_eval("vader-movies-test")) > 2000
