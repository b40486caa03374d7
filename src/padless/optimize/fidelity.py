"""The embedding fidelity gate: a variant ships only if its vectors stay close to the fp32 reference's.

:func:`score` compares two ``texts × D`` arrays (the torch fp32 reference's and a variant's, same texts, same order)
three ways, each against a threshold in :class:`FidelityConfig`:

* the **mean** and the **1st percentile** of the per-text cosine between the variant's and the reference's vector
  (default ≥ 0.995 and ≥ 0.98): the typical and the worst-but-one-percent text;
* **recall@10 against fp32**: each query's 10 nearest neighbours in the corpus (all the texts, the query itself
  left out) under the variant, against its 10 under the reference; the share of the reference's neighbours the
  variant also finds, averaged over the queries (default ≥ 0.95). Cosine similarity ranks the neighbours.

A row that is NaN (a text the model could not embed) counts as cosine 0 and as a zero vector in the retrieval, so it
fails rather than vanishes. Pure numpy: no model is loaded here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from padless.errors import ConfigError, InputError

K = 10
QUERY_SEED = 0


@dataclass(frozen=True, kw_only=True)
class FidelityConfig:
    """Thresholds an embedding variant must meet against the fp32 reference, and the retrieval's size."""

    min_cosine_mean: float = 0.995  # mean per-text cosine to fp32
    min_cosine_p1: float = 0.98  # 1st percentile of the per-text cosine
    min_recall_at_10: float = 0.95  # mean overlap of each query's top-10 with fp32's top-10
    corpus_texts: int = 2000  # texts embedded and searched (the eval texts)
    queries: int = 200  # of those, the texts whose neighbours are compared

    def validate(self) -> None:
        for name, low in (("min_cosine_mean", -1.0), ("min_cosine_p1", -1.0), ("min_recall_at_10", 0.0)):
            value = getattr(self, name)
            if not low <= value <= 1:
                raise ConfigError(f"{name} must be in {low:g}..1, got {value}")
        if self.queries < 1 or self.corpus_texts <= K:
            raise ConfigError(f"the fidelity gate needs at least 1 query and more than {K} corpus texts; got "
                              f"{self.queries} queries, {self.corpus_texts} texts")
        if self.queries > self.corpus_texts:
            raise ConfigError(f"queries ({self.queries}) cannot exceed the corpus ({self.corpus_texts} texts): "
                              "the queries are corpus texts")


def query_rows(n: int, queries: int) -> np.ndarray:
    """The corpus rows used as queries: the first ``queries`` of ``numpy.random.default_rng(0).permutation(n)``,
    sorted, so they span the whole corpus."""
    return np.sort(np.random.default_rng(QUERY_SEED).permutation(n)[:queries])


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; NaN rows and zero rows become zero vectors."""
    v = np.nan_to_num(np.asarray(vectors, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def cosines(reference: np.ndarray, variant: np.ndarray) -> np.ndarray:
    """Per-row cosine between two ``rows × D`` arrays (0 for a NaN or zero row)."""
    if reference.shape != variant.shape:
        raise InputError(f"reference and variant vectors differ in shape: {reference.shape} vs {variant.shape}")
    return np.einsum("ij,ij->i", _unit(reference), _unit(variant))


def neighbours(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """``len(queries) × k`` corpus rows nearest each query row by cosine, best first, the query itself left out
    (ties broken by the lower row number, so the order is deterministic)."""
    unit = _unit(vectors)
    sims = unit[queries] @ unit.T
    sims[np.arange(len(queries)), queries] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")
    return order[:, :k]


def recall_at_k(reference: np.ndarray, variant: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Per query: the share of its ``k`` nearest neighbours under ``reference`` that are also among its ``k``
    under ``variant``."""
    if len(reference) <= k:
        raise InputError(f"recall@{k} needs more than {k} corpus rows, got {len(reference)}")
    ref_nn, var_nn = neighbours(reference, queries, k), neighbours(variant, queries, k)
    return np.array([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(ref_nn, var_nn)])


def score(reference: np.ndarray, variant: np.ndarray, queries: np.ndarray, gate: FidelityConfig) -> dict[str, Any]:
    """Gate report: the three figures (with the lowest cosine and the worst query's recall beside them), the gate
    used, ``passed`` and, for a failure, each ``reason`` with the figure that failed."""
    gate.validate()
    cos = cosines(reference, variant)
    recall = recall_at_k(reference, variant, queries)
    mean, p1, r10 = float(cos.mean()), float(np.percentile(cos, 1)), float(recall.mean())
    reasons = []
    if mean < gate.min_cosine_mean:
        reasons.append(f"mean cosine {mean:.4f} < {gate.min_cosine_mean:g}")
    if p1 < gate.min_cosine_p1:
        reasons.append(f"1st-percentile cosine {p1:.4f} < {gate.min_cosine_p1:g}")
    if r10 < gate.min_recall_at_10:
        reasons.append(f"recall@10 {r10:.4f} < {gate.min_recall_at_10:g}")
    return {
        "rows": int(len(cos)),
        "queries": int(len(queries)),
        "cosine_mean": round(mean, 6),
        "cosine_p1": round(p1, 6),
        "cosine_min": round(float(cos.min()), 6),
        "recall_at_10": round(r10, 4),
        "recall_at_10_min": round(float(recall.min()), 2),
        "gate": asdict(gate),
        "passed": not reasons,
        "reasons": reasons,
    }
