"""Unit tests for padless.runtime.dummy: logits depend only on each row's real tokens."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from padless.runtime.base import ModelInfo, Runtime
from padless.runtime.dummy import DummyRuntime


def _info(num_labels: int = 2) -> ModelInfo:
    return ModelInfo(
        id2label={i: f"LABEL_{i}" for i in range(num_labels)},
        problem_type=None,
        model_type="bert",
        hidden_size=8,
        num_layers=1,
        non_embedding_params=100,
    )


def _pad(rows: list[list[int]], width: int, pad_values: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = row
        mask[r, : len(row)] = 1
        if pad_values is not None:
            ids[r, len(row) :] = pad_values[r]
    return ids, mask


def _single(rt: DummyRuntime, row: list[int]) -> np.ndarray:
    ids, mask = _pad([row], len(row))
    return rt.forward(ids, mask)[0]


def test_output_shape_dtype_and_range():
    rt = DummyRuntime(_info(3))
    ids, mask = _pad([[101, 5, 102], [101, 102]], 4)
    out = rt.forward(ids, mask)
    assert out.shape == (2, 3)
    assert out.dtype == np.float32
    assert np.all(np.abs(out) <= 4.0)
    assert rt.calls == 1
    assert isinstance(rt, Runtime)


def test_logits_depend_on_the_tokens():
    rt = DummyRuntime(_info(2))
    a = _single(rt, [101, 7592, 2088, 102])
    b = _single(rt, [101, 7592, 2089, 102])  # one token differs
    c = _single(rt, [101, 7592, 102])  # one token fewer
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_deterministic_across_instances_and_calls():
    row = [101, 2023, 3185, 2001, 2307, 102]
    first = _single(DummyRuntime(_info(2)), row)
    rt = DummyRuntime(_info(2))
    for _ in range(3):
        assert np.array_equal(_single(rt, row), first)
    assert rt.calls == 3


rows_strategy = st.lists(
    st.lists(st.integers(min_value=0, max_value=250_000), min_size=1, max_size=40), min_size=1, max_size=8
)


@settings(max_examples=100, deadline=None)
@given(rows_strategy, st.integers(min_value=0, max_value=30), st.integers(1, 5), st.data())
def test_batched_equals_single_exactly(rows, extra_width, num_labels, data):
    rt = DummyRuntime(_info(num_labels))
    width = max(len(r) for r in rows) + extra_width
    # Padding positions hold arbitrary ids: only the attention mask may decide what counts.
    pad_values = data.draw(st.lists(st.integers(0, 250_000), min_size=len(rows), max_size=len(rows)))
    ids, mask = _pad(rows, width, pad_values)
    batched = rt.forward(ids, mask)
    for r, row in enumerate(rows):
        assert np.array_equal(batched[r], _single(rt, row))


def test_other_rows_do_not_matter():
    rt = DummyRuntime(_info(2))
    target = [101, 1996, 3185, 102]
    alone = _single(rt, target)
    for others in ([[101, 102]], [[101] + [7] * 200 + [102], [101, 5, 102]], [target, target]):
        ids, mask = _pad([*others, target], 256)
        assert np.array_equal(rt.forward(ids, mask)[-1], alone)


def test_warmup_runs_a_forward_pass():
    rt = DummyRuntime(_info(2))
    rt.warmup(max_rows=2, max_width=4)
    assert rt.calls == 1
    assert rt.describe()["backend"] == "dummy"


@pytest.mark.parametrize("num_labels", [1, 2, 5])
def test_label_count_follows_id2label(num_labels):
    ids, mask = _pad([[1, 2, 3]], 3)
    assert DummyRuntime(_info(num_labels)).forward(ids, mask).shape == (1, num_labels)
