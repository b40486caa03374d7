"""Unit tests for padless.postprocess: scoring function choice, probabilities, top_k and ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from padless.postprocess import PostProcessor, Prediction, scoring_function

LABELS3 = {0: "neg", 1: "neu", 2: "pos"}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


# transformers' TextClassificationPipeline.postprocess: regression → none; multi_label or 1 label → sigmoid;
# single_label or several labels → softmax.
@pytest.mark.parametrize(
    ("problem_type", "num_labels", "expected"),
    [
        (None, 1, "sigmoid"),
        (None, 2, "softmax"),
        (None, 5, "softmax"),
        ("single_label_classification", 2, "softmax"),
        ("single_label_classification", 1, "sigmoid"),
        ("multi_label_classification", 1, "sigmoid"),
        ("multi_label_classification", 4, "sigmoid"),
        ("regression", 1, "none"),
        ("regression", 3, "none"),
    ],
)
def test_scoring_function_mirrors_transformers_pipeline(problem_type, num_labels, expected):
    assert scoring_function(problem_type, num_labels) == expected


def test_post_processor_picks_function_from_config():
    assert PostProcessor({0: "a"}, None).function == "sigmoid"
    assert PostProcessor(LABELS3, None).function == "softmax"
    assert PostProcessor(LABELS3, "multi_label_classification").function == "sigmoid"
    assert PostProcessor({0: "score"}, "regression").function == "none"


def test_labels_follow_id_order_not_dict_insertion_order():
    pp = PostProcessor({2: "pos", 0: "neg", 1: "neu"}, None)
    assert pp.labels == ["neg", "neu", "pos"]


def test_softmax_values_and_sum():
    logits = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], dtype=np.float32)
    preds = PostProcessor(LABELS3, None)(logits, top_k=0)
    for row, pred in zip(logits.tolist(), preds):
        expected = dict(zip(["neg", "neu", "pos"], _softmax(row)))
        got = dict(pred.scores)
        assert got.keys() == expected.keys()
        for k in expected:
            assert got[k] == pytest.approx(expected[k], rel=1e-9)
        assert sum(got.values()) == pytest.approx(1.0, abs=1e-12)
    assert preds[0].label == "pos"
    assert preds[1].label == "neg"


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6).filter(lambda s: s[1] >= 2),
        elements=st.floats(-50, 50, width=32),
    )
)
def test_softmax_probabilities_sum_to_one_and_are_sorted(logits):
    labels = {i: f"L{i}" for i in range(logits.shape[1])}
    preds = PostProcessor(labels, "single_label_classification")(logits, top_k=0)
    assert len(preds) == logits.shape[0]
    for row, pred in zip(logits, preds):
        scores = [s for _, s in pred.scores]
        assert len(scores) == logits.shape[1]
        assert sum(scores) == pytest.approx(1.0, abs=1e-9)
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert scores == sorted(scores, reverse=True)
        # The top label carries the largest logit (softmax may round near-equal logits to a tie, which then
        # resolves to the lower label index).
        top = int(pred.label[1:])
        assert row[top] >= row.max() - 1e-6
        if np.sort(row)[-2] < row.max() - 1e-3:
            assert top == int(np.argmax(row))
        assert (pred.label, pred.score) == pred.scores[0]


def test_sigmoid_for_single_label_and_multi_label():
    single = PostProcessor({0: "LABEL_0"}, None)(np.array([[0.0], [2.0], [-3.0]], dtype=np.float32))
    assert [p.label for p in single] == ["LABEL_0"] * 3
    assert [p.score for p in single] == pytest.approx([0.5, _sigmoid(2.0), _sigmoid(-3.0)])

    multi = PostProcessor(LABELS3, "multi_label_classification")(np.array([[1.0, -2.0, 3.0]]), top_k=0)
    assert [lab for lab, _ in multi[0].scores] == ["pos", "neg", "neu"]
    assert [s for _, s in multi[0].scores] == pytest.approx([_sigmoid(3.0), _sigmoid(1.0), _sigmoid(-2.0)])
    # Sigmoid scores are independent: they need not sum to 1.
    assert sum(s for _, s in multi[0].scores) > 1.0


def test_regression_is_identity():
    preds = PostProcessor({0: "score"}, "regression")(np.array([[3.25], [-7.5]], dtype=np.float32))
    assert [p.score for p in preds] == [3.25, -7.5]
    assert [p.label for p in preds] == ["score", "score"]


def test_raw_scores_returns_logits():
    logits = np.array([[1.5, -0.25, 4.0]], dtype=np.float32)
    pred = PostProcessor(LABELS3, None)(logits, top_k=0, raw_scores=True)[0]
    assert pred.scores == (("pos", 4.0), ("neg", 1.5), ("neu", -0.25))
    assert pred.label == "pos" and pred.score == 4.0
    single = PostProcessor({0: "x"}, None)(np.array([[-2.0]]), raw_scores=True)[0]
    assert single.score == -2.0


def test_top_k_limits_and_orders():
    logits = np.array([[0.1, 0.9, 0.5]])
    pp = PostProcessor(LABELS3, None)
    top1 = pp(logits)[0]
    assert [lab for lab, _ in top1.scores] == ["neu"]
    top2 = pp(logits, top_k=2)[0]
    assert [lab for lab, _ in top2.scores] == ["neu", "pos"]
    all_ = pp(logits, top_k=0)[0]
    assert [lab for lab, _ in all_.scores] == ["neu", "pos", "neg"]
    # top_k larger than the label count keeps every label once.
    many = pp(logits, top_k=10)[0]
    assert many.scores == all_.scores
    # Top-k scores are the same numbers as in the full list.
    assert top2.scores == all_.scores[:2]
    assert top1.label == "neu" and top1.score == pytest.approx(_softmax([0.1, 0.9, 0.5])[1])


def test_ties_are_stable_by_label_index():
    pp = PostProcessor({0: "a", 1: "b", 2: "c", 3: "d"}, None)
    preds = pp(np.array([[1.0, 2.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]]), top_k=0)
    assert [lab for lab, _ in preds[0].scores] == ["b", "c", "a", "d"]
    assert preds[0].label == "b"
    assert [lab for lab, _ in preds[1].scores] == ["a", "b", "c", "d"]
    assert [s for _, s in preds[1].scores] == pytest.approx([0.25] * 4)
    raw = pp(np.array([[5.0, 5.0, 5.0, 5.0]]), top_k=2, raw_scores=True)[0]
    assert raw.scores == (("a", 5.0), ("b", 5.0))


def test_prediction_fields_are_python_floats():
    pred = PostProcessor(LABELS3, None)(np.array([[0.0, 1.0, 2.0]], dtype=np.float32))[0]
    assert isinstance(pred, Prediction)
    assert type(pred.score) is float
    assert all(type(s) is float and type(lab) is str for lab, s in pred.scores)


def test_sigmoid_of_extreme_logits_does_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preds = PostProcessor({0: "x"}, None)(np.array([[-1000.0], [1000.0]]))
    assert preds[0].score == 0.0
    assert preds[1].score == 1.0
