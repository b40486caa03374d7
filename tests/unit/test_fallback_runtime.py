"""The fallback runtime: which rows it recomputes, what it returns for them, and the margin rule it relies on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from padless.runtime.base import Runtime
from padless.runtime.fallback import FallbackRuntime, decision_margin, flip_error


class Table(Runtime):
    """Returns preset logits per first token id, and records the batches it was given."""

    def __init__(self, by_id: dict[int, list[float]], name: str = "table") -> None:
        self.by_id = by_id
        self.name = name
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []
        self.types: list[np.ndarray | None] = []

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                token_type_ids: np.ndarray | None = None) -> np.ndarray:
        self.calls.append((input_ids.copy(), attention_mask.copy()))
        self.types.append(None if token_type_ids is None else token_type_ids.copy())
        return np.array([self.by_id[int(i)] for i in input_ids[:, 0]], dtype=np.float32)

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "dtype": self.name}


def _batch(lengths: list[int], width: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for r, n in enumerate(lengths):
        ids[r, :n] = r + 1  # the first token id names the row
        mask[r, :n] = 1
    return ids, mask


def test_rows_below_the_margin_get_the_exact_logits_and_the_rest_stay_fast() -> None:
    fast = Table({1: [0.0, 3.0], 2: [1.0, 1.2], 3: [2.0, 0.0], 4: [0.0, 0.5]}, "int8")
    exact = Table({2: [1.5, 1.0], 4: [0.0, 0.7]}, "float32")
    rt = FallbackRuntime(fast, exact, margin=1.0)
    ids, mask = _batch([5, 3, 9, 2], width=9)
    out = rt.forward(ids, mask)
    np.testing.assert_array_equal(out, np.array([[0.0, 3.0], [1.5, 1.0], [2.0, 0.0], [0.0, 0.7]], dtype=np.float32))
    (sub_ids, sub_mask), = exact.calls
    # Only rows 2 and 4 (margins 0.2 and 0.5), cut to their own longest length (3), not the batch's 9.
    assert sub_ids.shape == (2, 3) and sub_ids[:, 0].tolist() == [2, 4]
    assert sub_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert (rt.rows, rt.recomputed, rt.recomputed_fraction) == (4, 2, 0.5)


def test_text_pairs_keep_their_segments_in_both_runtimes() -> None:
    fast = Table({1: [0.0, 3.0], 2: [1.0, 1.2]}, "int8")
    exact = Table({2: [1.5, 1.0]}, "float32")
    ids, mask = _batch([4, 3], width=4)
    types = np.array([[0, 0, 1, 1], [0, 1, 1, 0]], dtype=np.int64)
    FallbackRuntime(fast, exact, margin=1.0).forward(ids, mask, types)
    np.testing.assert_array_equal(fast.types[0], types)
    np.testing.assert_array_equal(exact.types[0], [[0, 1, 1]])  # row 2's segments, cut to its own length


def test_no_exact_call_when_every_row_is_clear_of_the_margin() -> None:
    fast = Table({1: [0.0, 3.0], 2: [4.0, 1.0]})
    exact = Table({})
    rt = FallbackRuntime(fast, exact, margin=2.5)
    rt.forward(*_batch([2, 4], width=4))
    assert exact.calls == [] and rt.recomputed == 0


def test_a_nan_row_is_recomputed_and_describe_reports_both_paths() -> None:
    rt = FallbackRuntime(Table({1: [float("nan"), 1.0]}, "int8"), Table({1: [0.2, 0.1]}, "float32"), margin=0.0)
    out = rt.forward(*_batch([3], width=3))
    assert out.tolist() == [[pytest.approx(0.2), pytest.approx(0.1)]]
    info = rt.describe()
    assert info["dtype"] == "int8, float32 fallback"
    assert info["fallback"] == {"below_margin": 0.0, "rows": 1, "recomputed": 1}


def test_a_negative_margin_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        FallbackRuntime(Table({}), Table({}), margin=-1)


def test_decision_margin_is_the_lead_over_the_runner_up() -> None:
    logits = np.array([[1.0, 4.0, 2.5], [0.0, 0.0, -1.0], [-3.0, 2.0, 1.0]])
    np.testing.assert_allclose(decision_margin(logits), [1.5, 0.0, 1.0])
    np.testing.assert_allclose(decision_margin(np.array([[-2.0], [0.5]])), [2.0, 0.5])


def test_flip_error_of_a_binary_model_is_the_change_in_the_logit_difference() -> None:
    ref = np.array([[0.0, 2.0], [1.0, 0.5]])
    var = np.array([[0.5, 2.0], [1.0, 1.4]])
    np.testing.assert_allclose(flip_error(ref, var), [0.5, 0.9])


logit_rows = arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(2, 5)),
                    elements=st.floats(-8, 8, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(ref=logit_rows, noise_seed=st.integers(0, 2**31 - 1), scale=st.floats(0.0, 3.0))
def test_a_row_whose_variant_margin_beats_its_flip_error_keeps_the_reference_label(
        ref: np.ndarray, noise_seed: int, scale: float) -> None:
    """The rule the fallback relies on: if a row's flip error is below the variant's own margin, the variant's
    label is the reference's. (Ties in the reference are left out: either label is then 'the' reference's.)"""
    var = ref + np.random.default_rng(noise_seed).normal(0, scale, ref.shape)
    safe = flip_error(ref, var) < decision_margin(var)
    untied = decision_margin(ref) > 0
    assert (ref.argmax(1) == var.argmax(1))[safe & untied].all()
