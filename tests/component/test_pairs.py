"""Golden checks for text pairs (NLI, paraphrase, cross-encoders) on every runtime.

A pair's logits inside a length-sorted, packed batch of singles and pairs equal its logits scored alone (1e-4, the
fp32 bar), and equal ``transformers.pipeline``'s on the same pair. The tiny model's token-type embeddings are scaled
up so that a pair scored without its segments (or as one joined text) is visibly wrong.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from padless.datasets import vader_texts
from padless.engine import Classifier
from padless.errors import EmptyInputError, TooLongError

TOLERANCE = 1e-4
MAX_LENGTH = 48


@pytest.fixture(scope="module")
def pair_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny BERT with segment embeddings that matter (a random init leaves them near zero)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-pairs")
    model = BertForSequenceClassification.from_pretrained(str(tiny_model_dir)).eval()
    with torch.no_grad():
        model.bert.embeddings.token_type_embeddings.weight.mul_(40.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(out)
    return out


def _items(n: int = 60, seed: int = 5) -> list[str | tuple[str, str]]:
    """Singles and pairs of real snippets of very different lengths (some pairs must be truncated)."""
    rng = random.Random(seed)
    pool = vader_texts()
    items: list[str | tuple[str, str]] = []
    for i in range(n):
        a = " ".join(rng.choice(pool) for _ in range(rng.randint(1, 4 if i % 6 else 12)))
        items.append(a if i % 3 == 0 else (a, rng.choice(pool)))
    return items + [("ok", "fine"), ("a", "b")]


def _pipeline_logits(model_dir: Path, items: list[str | tuple[str, str]]) -> np.ndarray:
    from transformers import AutoTokenizer, pipeline

    pipe = pipeline("text-classification", model=str(model_dir), tokenizer=AutoTokenizer.from_pretrained(
        str(model_dir), model_max_length=MAX_LENGTH), top_k=None, function_to_apply="none", device="cpu")
    labels = pipe.model.config.id2label
    rows = []
    for item in items:
        query = {"text": item[0], "text_pair": item[1]} if isinstance(item, tuple) else item
        out = pipe(query, truncation=True)
        out = out[0] if isinstance(out[0], list) else out  # a plain string comes back wrapped in one more list
        scores = {s["label"]: s["score"] for s in out}
        rows.append([scores[labels[i]] for i in range(len(labels))])
    return np.array(rows)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_pairs_in_packed_batches_equal_alone_and_pipeline(pair_model_dir: Path, backend: str) -> None:
    clf = Classifier(str(pair_model_dir), backend=backend, max_length=MAX_LENGTH, threads=1, max_batch_tokens=512)
    items = _items()
    packed, errors = clf.logits(items)
    assert all(e is None for e in errors)
    assert clf.stats.batches > 1  # really packed: several length-sorted batches of mixed singles and pairs
    alone = np.stack([clf.logits([item])[0][0] for item in items])
    np.testing.assert_allclose(packed, alone, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(packed, _pipeline_logits(pair_model_dir, items), atol=TOLERANCE, rtol=0)
    # Segments matter: the same pair joined into one text scores differently.
    first_pair = next(i for i, item in enumerate(items) if isinstance(item, tuple))
    joined = clf.logits([" ".join(items[first_pair])])[0][0]
    assert np.abs(joined - packed[first_pair]).max() > 100 * TOLERANCE


def test_pair_forms_and_errors(pair_model_dir: Path) -> None:
    # The dummy backend is exact per row, so the three spellings of one pair must score identically.
    clf = Classifier(str(pair_model_dir), backend="dummy", max_length=16, truncate=False)
    pair = ("a premise", "a hypothesis")
    as_tuple, as_list, as_dict, empty, too_long = clf.run(
        [pair, list(pair), {"text": pair[0], "text_pair": pair[1]}, ("a premise", " "), ("a premise", "word " * 40)])
    assert as_tuple == as_list == as_dict
    assert isinstance(empty, EmptyInputError) and "text_pair" in str(empty)
    assert isinstance(too_long, TooLongError)
    with pytest.raises(EmptyInputError, match="item 1"):
        clf(["fine", ("", "x")])


def test_only_second_truncation_keeps_the_first_text(pair_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(pair_model_dir))
    premise, hypothesis = "the premise is short", "and the hypothesis goes on and on " * 6
    clf = Classifier(str(pair_model_dir), backend="dummy", max_length=16, pair_truncation="only_second")
    (ids,) = clf.encoder.encode([(premise, hypothesis)])
    want = tok(premise, hypothesis, truncation="only_second", max_length=16)
    assert list(ids) == want["input_ids"] and ids.type_ids == want["token_type_ids"]  # type: ignore[union-attr]
    (refused,) = Classifier(str(pair_model_dir), backend="dummy", max_length=8,
                            pair_truncation="only_first").encoder.encode([("a", hypothesis)])
    assert isinstance(refused, TooLongError)
