"""padless.pooling: long-text windows, the combination of their vectors, and Matryoshka truncation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from padless.pooling import combine, truncate_dimensions, windows

CLS, SEP = 101, 102
content_ids = st.lists(st.integers(min_value=1000, max_value=30000), min_size=0, max_size=300)


@st.composite
def long_texts(draw: st.DrawFn) -> tuple[list[int], int, int]:
    """A text with its special tokens, a max_len and an allowed overlap."""
    content = draw(content_ids)
    max_len = draw(st.integers(min_value=3, max_value=40))
    overlap = draw(st.integers(min_value=0, max_value=max_len - 3))
    return [CLS, *content, SEP], max_len, overlap


def _content(window: list[int]) -> list[int]:
    return window[1:-1]


@settings(max_examples=300, deadline=None)
@given(long_texts())
def test_windows_fit_are_wrapped_and_cover_the_content_in_order(case: tuple[list[int], int, int]) -> None:
    ids, max_len, overlap = case
    out = windows(ids, max_len, overlap, cls_id=CLS, sep_id=SEP)
    assert out
    assert all(len(w) <= max_len and w[0] == CLS and w[-1] == SEP for w in out)
    # Dropping each window's overlap with the previous one gives back the content exactly, in order.
    rebuilt = _content(out[0]) + [t for w in out[1:] for t in _content(w)[overlap:]]
    assert rebuilt == ids[1:-1]
    # Every window but the last is full: no window is wasted on a sliver.
    assert all(len(w) == max_len for w in out[:-1])


@settings(max_examples=300, deadline=None)
@given(long_texts())
def test_consecutive_windows_share_exactly_the_overlap(case: tuple[list[int], int, int]) -> None:
    ids, max_len, overlap = case
    out = windows(ids, max_len, overlap, cls_id=CLS, sep_id=SEP)
    for before, after in zip(out, out[1:]):
        shared = _content(before)[len(_content(before)) - overlap:] if overlap else []
        assert _content(after)[:overlap] == shared
    if len(out) > 1:  # the last window holds content the one before did not (no window is redundant)
        assert len(_content(out[-1])) > overlap


@settings(max_examples=200, deadline=None)
@given(content_ids, st.integers(min_value=3, max_value=400), st.data())
def test_a_text_that_fits_is_one_window_unchanged(content: list[int], max_len: int, data: st.DataObject) -> None:
    assume(len(content) + 2 <= max_len)
    ids = [CLS, *content, SEP]
    overlap = data.draw(st.integers(min_value=0, max_value=max_len - 3))
    assert windows(ids, max_len, overlap, cls_id=CLS, sep_id=SEP) == [ids]


def test_windows_count_and_contents_on_a_worked_example() -> None:
    ids = [CLS, *range(1, 11), SEP]  # 10 content tokens, 4 per window, 1 shared: 1-4, 4-7, 7-10
    assert windows(ids, 6, 1, cls_id=CLS, sep_id=SEP) == [
        [CLS, 1, 2, 3, 4, SEP], [CLS, 4, 5, 6, 7, SEP], [CLS, 7, 8, 9, 10, SEP]]
    assert windows([0, *range(1, 6), 2], 4, 0, cls_id=0, sep_id=2) == [[0, 1, 2, 2], [0, 3, 4, 2], [0, 5, 2]]


def test_windows_without_a_start_token() -> None:
    assert windows([5, 6, 7, 8, 1], 3, 0, cls_id=None, sep_id=1) == [[5, 6, 1], [7, 8, 1]]


@pytest.mark.parametrize(("max_len", "overlap"), [(10, 8), (10, 9), (10, -1), (2, 0)])
def test_an_overlap_that_leaves_no_room_is_refused(max_len: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="overlap"):
        windows([CLS, *range(200, 230), SEP], max_len, overlap, cls_id=CLS, sep_id=SEP)


def test_ids_without_their_special_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="special tokens"):
        windows([5, 6, 7], 10, 0, cls_id=CLS, sep_id=SEP)


vectors = arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 48)),
                 elements=st.floats(-100, 100, width=32)).filter(lambda a: bool(np.all(np.abs(a).sum(1) > 1e-3)))


@settings(max_examples=200, deadline=None)
@given(vectors)
def test_combine_is_the_mean_and_unit_length_when_normalising(vs: np.ndarray) -> None:
    mean = vs.astype(np.float64).mean(axis=0)
    plain = combine(vs, normalize=False)
    assert plain.shape == (vs.shape[1],) and plain.dtype == np.float32
    np.testing.assert_allclose(plain, mean, rtol=1e-5, atol=1e-4)
    unit = combine(vs, normalize=True)
    norm = np.linalg.norm(mean)
    assume(norm > 1e-3)
    assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(unit, mean / norm, atol=1e-5)


def test_combine_of_one_window_is_that_window() -> None:
    v = np.array([[3.0, 4.0]], dtype=np.float32)
    np.testing.assert_array_equal(combine(v, normalize=False), [3.0, 4.0])
    np.testing.assert_allclose(combine(v, normalize=True), [0.6, 0.8])


def test_combine_refuses_no_windows() -> None:
    with pytest.raises(ValueError, match="at least one window"):
        combine(np.zeros((0, 4), dtype=np.float32), normalize=True)


@settings(max_examples=200, deadline=None)
@given(vectors, st.data())
def test_truncation_keeps_the_leading_components(vs: np.ndarray, data: st.DataObject) -> None:
    dims = data.draw(st.integers(1, vs.shape[1]))
    cut = truncate_dimensions(vs, dims, normalize=False)
    np.testing.assert_array_equal(cut, vs[:, :dims])
    unit = truncate_dimensions(vs, dims, normalize=True)
    assert unit.shape == (len(vs), dims) and unit.dtype == np.float32
    norms = np.linalg.norm(vs[:, :dims].astype(np.float64), axis=1)
    real = norms > 1e-3
    np.testing.assert_allclose(np.linalg.norm(unit[real], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(unit[real], vs[real, :dims] / norms[real, None], atol=1e-5)


def test_truncation_of_one_vector_and_a_zero_prefix() -> None:
    np.testing.assert_allclose(truncate_dimensions(np.array([3.0, 4.0, 12.0]), 2, normalize=True), [0.6, 0.8])
    np.testing.assert_array_equal(truncate_dimensions(np.array([0.0, 0.0, 1.0]), 2, normalize=True), [0.0, 0.0])


@pytest.mark.parametrize("dims", [0, -1, 5])
def test_truncation_outside_the_embedding_is_refused(dims: int) -> None:
    with pytest.raises(ValueError, match="dimensions must be in 1..4"):
        truncate_dimensions(np.ones((2, 4), dtype=np.float32), dims, normalize=True)
