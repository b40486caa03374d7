"""The Embedder: the engine's tokenize → plan → run → restore-order path for the embed task.

On the default model (all-MiniLM-L6-v2, slow) its vectors are sentence-transformers' own (cosine ≥ 0.99999 per text,
batched and one text per call; ONNX and OpenVINO within 1e-4 of torch), and so are its Matryoshka truncation, its
normalisation switched off and its prompts; chunk mode is the normalised mean of the windows' vectors run by hand. On
the tiny BERT folder (a plain folder: mean pooling, no Normalize) the fast paths: errors in place, order, options
refused in one line, chunk windows and stats.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from padless import Embedder as LazyEmbedder
from padless.datasets import vader_texts
from padless.embedder import Embedder, EmbedStats
from padless.errors import ConfigError, DecodeError, EmptyInputError, TooLongError
from padless.loader import base_encoder_path
from padless.pooling import combine, windows

MIN_COSINE = 0.99999
TOLERANCE = 1e-4
measured: dict[str, float] = {}  # printed with -s: the figures the report quotes


def _texts_of_every_length() -> list[str]:
    """Real English of 3 tokens up to well past MiniLM's 256 (joined VADER snippets), in no particular order."""
    rng = random.Random(7)
    snippets = vader_texts()
    texts = ["Hi", "ok then", "Not bad at all!!!"]
    texts += [" ".join(rng.choice(snippets) for _ in range(1 + i * i // 90)) for i in range(37)]
    rng.shuffle(texts)
    return texts


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


# -- the default model against sentence-transformers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _texts_of_every_length()


@pytest.fixture(scope="module")
def st_model() -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(base_encoder_path()), device="cpu")


@pytest.fixture(scope="module")
def default_embedder() -> Embedder:
    return Embedder("default", backend="torch", threads=2)


@pytest.fixture(scope="module")
def torch_vectors(default_embedder: Embedder, texts: list[str]) -> np.ndarray:
    return default_embedder.encode(texts)


@pytest.mark.slow
def test_default_matches_sentence_transformers_batched_and_alone(default_embedder: Embedder, st_model: Any,
                                                                   texts: list[str], torch_vectors: np.ndarray) -> None:
    assert max(len(default_embedder.encoder.tokenizer(t)["input_ids"]) for t in texts) > 256  # some are cut
    reference = st_model.encode(texts)
    assert torch_vectors.shape == (len(texts), 384) and torch_vectors.dtype == np.float32
    batched = _cosines(torch_vectors, reference)
    alone = np.stack([default_embedder.encode(t) for t in texts])
    single = _cosines(alone, reference)
    measured["min cosine batched"], measured["min cosine alone"] = float(batched.min()), float(single.min())
    print(measured)
    assert batched.min() >= MIN_COSINE and single.min() >= MIN_COSINE
    assert np.allclose(np.linalg.norm(torch_vectors, axis=1), 1.0, atol=1e-5)
    assert default_embedder.describe()["max_length"] == 256 and default_embedder.dimension == 384


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_onnx_and_openvino_match_torch(backend: str, texts: list[str], torch_vectors: np.ndarray) -> None:
    other = Embedder(backend=backend, threads=2).encode(texts)
    diff = float(np.abs(other - torch_vectors).max())
    measured[f"max |{backend} - torch|"] = diff
    print(measured)
    assert diff <= TOLERANCE


@pytest.mark.slow
def test_dimensions_is_sentence_transformers_truncate_dim_normalised(st_model: Any, texts: list[str]) -> None:
    emb = Embedder(backend="torch", threads=2, dimensions=64)
    got = emb.encode(texts[:12])
    reference = st_model.encode(texts[:12], truncate_dim=64, normalize_embeddings=True)
    assert got.shape == (12, 64) and emb.dimension == 64 and emb.describe()["dimensions"] == 64
    assert _cosines(got, reference).min() >= MIN_COSINE
    assert np.abs(got - reference).max() <= TOLERANCE
    with pytest.raises(ConfigError, match=r"1\.\.384"):
        Embedder(backend="torch", dimensions=385)


@pytest.mark.slow
def test_normalize_false_is_sentence_transformers_without_its_normalize_module(st_model: Any,
                                                                             texts: list[str]) -> None:
    from sentence_transformers import SentenceTransformer

    unnormalised = SentenceTransformer(modules=[st_model[0], st_model[1]], device="cpu")
    emb = Embedder(backend="torch", threads=2, normalize=False)
    got, reference = emb.encode(texts[:12]), unnormalised.encode(texts[:12])
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
    assert np.abs(got - reference).max() <= TOLERANCE and emb.describe()["normalize"] is False


@pytest.mark.slow
def test_prompts_as_sentence_transformers_puts_them(st_model: Any, texts: list[str], tmp_path: Path) -> None:
    emb = Embedder(backend="torch", threads=2, prompt="query: ")
    got = emb.encode(texts[:10])
    assert _cosines(got, st_model.encode(texts[:10], prompt="query: ")).min() >= MIN_COSINE
    assert emb.describe()["prompt"] == "query: "
    # A folder with named prompts and a default one: the default applies unless another is named.
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "prompted"
    folder.mkdir()
    base = base_encoder_path()
    for item in base.iterdir():
        if item.name != "config_sentence_transformers.json":
            (folder / item.name).symlink_to(item)
    (folder / "config_sentence_transformers.json").write_text(
        '{"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "passage"}')
    st_prompted = SentenceTransformer(str(folder), device="cpu")
    default = Embedder(str(folder), backend="torch", threads=2)
    assert _cosines(default.encode(texts[:6]), st_prompted.encode(texts[:6])).min() >= MIN_COSINE
    named = Embedder(str(folder), backend="torch", threads=2, prompt_name="query")
    assert _cosines(named.encode(texts[:6]), st_prompted.encode(texts[:6], prompt_name="query")).min() >= MIN_COSINE
    with pytest.raises(ConfigError, match="prompt name 'nope'"):
        Embedder(str(folder), backend="torch", prompt_name="nope")


@pytest.mark.slow
def test_chunk_mode_is_the_normalised_mean_of_its_windows(default_embedder: Embedder, texts: list[str]) -> None:
    snippets = iter(vader_texts())
    tokenizer = default_embedder.encoder.tokenizer
    long_text, ids = "", []
    while len(ids) < 700:  # a text of about 700 tokens, well under max_chars
        long_text = f"{long_text} {next(snippets)}".strip()
        ids = tokenizer(long_text, truncation=True, max_length=10_000)["input_ids"]
    emb = Embedder(backend="torch", threads=2, long="chunk", chunk_overlap=32)
    short = [t for t in texts if len(tokenizer(t, truncation=True, max_length=10_000)["input_ids"]) <= 256][:5]
    got = emb.encode([short[0], long_text, *short[1:]])
    parts = windows(ids, 256, 32, cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id)
    assert len(parts) >= 3
    by_hand = combine(np.concatenate([emb.runtime.forward(*emb.pad([p], len(p))) for p in parts]), True)
    assert np.abs(got[1] - by_hand).max() <= 1e-5
    # The short texts are as in truncate mode, and every window ran in the one plan.
    assert np.abs(np.delete(got, 1, axis=0) - default_embedder.encode(short)).max() <= 1e-5
    assert isinstance(emb.stats, EmbedStats)
    assert emb.stats.windows == len(short) + len(parts) and emb.stats.split == 1
    assert emb.describe()["long"] == "chunk" and emb.describe()["chunk_overlap"] == 32


# -- the tiny folder: the fast paths ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Embedder:
    return Embedder(str(tiny_model_dir), backend="torch", threads=1)


def test_the_package_exports_the_embedder() -> None:
    assert LazyEmbedder is Embedder


def test_tiny_vectors_keep_order_and_errors_stay_in_place(tiny: Embedder) -> None:
    texts = ["a fine film", "", "rain " * 40, ("a", "b"), "ok", {"text": "a", "text_pair": "b"}, 3]
    results = tiny.run(texts)
    assert isinstance(results[1], EmptyInputError)
    assert isinstance(results[3], DecodeError) and "pair" in str(results[3])
    assert isinstance(results[5], DecodeError) and isinstance(results[6], DecodeError)
    good = [0, 2, 4]
    alone = np.stack([tiny.encode(texts[i]) for i in good])  # type: ignore[arg-type]
    assert np.abs(np.stack([results[i] for i in good]) - alone).max() <= 1e-5  # type: ignore[misc]
    vectors, errors = tiny.vectors(texts)
    assert vectors.shape == (7, tiny.dimension) == (7, 64) and np.isnan(vectors[1]).all()
    assert [e is None for e in errors] == [True, False, True, False, True, False, False]
    with pytest.raises(EmptyInputError, match="item 1"):
        tiny.encode(["x", "  "])
    assert tiny.encode([]).shape == (0, 64)
    assert np.array_equal(tiny.outputs(["ok", "fine"])[0], tiny.encode(["ok", "fine"]))  # the engine's rows
    plain = tiny.describe()
    assert plain["task"] == "embed" and plain["pooling"] == "mean" and plain["normalize"] is False


def test_tiny_options_normalize_dimensions_and_describe(tiny_model_dir: Path, tiny: Embedder) -> None:
    texts = ["a fine film", "dull and far too long", "ok"]
    raw = tiny.encode(texts)
    unit = Embedder(str(tiny_model_dir), backend="torch", threads=1, normalize=True, dimensions=16)
    got = unit.encode(texts)
    cut = raw[:, :16] / np.linalg.norm(raw[:, :16], axis=1, keepdims=True)
    assert got.shape == (3, 16) and np.abs(got - cut).max() <= 1e-5
    cls = Embedder(str(tiny_model_dir), backend="torch", threads=1, pooling="cls")
    assert cls.describe()["pooling"] == "cls" and np.abs(cls.encode(texts) - raw).max() > 1e-3
    for bad in ({"dimensions": 65}, {"dimensions": 0}, {"long": "split"}, {"chunk_overlap": -1},
                {"pooling": "weighted"}, {"long": "chunk", "max_length": 16, "chunk_overlap": 14}):
        with pytest.raises(ConfigError):
            Embedder(str(tiny_model_dir), backend="torch", **bad)  # type: ignore[arg-type]
    keys = set(unit.describe())
    assert {"model", "path", "task", "pooling", "normalize", "dimensions", "prompt", "long", "max_length",
            "truncate", "max_batch_tokens", "max_batch_size", "backend"} <= keys
    assert unit.with_options(max_batch_size=2).encode(texts).shape == (3, 16)


def test_tiny_truncate_off_refuses_a_long_text(tiny_model_dir: Path) -> None:
    strict = Embedder(str(tiny_model_dir), backend="torch", threads=1, max_length=16, truncate=False)
    results = strict.run(["short text", "word " * 40])
    assert isinstance(results[1], TooLongError) and isinstance(results[0], np.ndarray)


def test_tiny_chunk_mode_windows_in_one_plan(tiny_model_dir: Path) -> None:
    emb = Embedder(str(tiny_model_dir), backend="torch", threads=1, max_length=16, long="chunk", chunk_overlap=4,
                   truncate=False)
    long_text = " ".join(f"word{i}" for i in range(30))
    texts = ["short one", long_text, "another short text"]
    got = emb.encode(texts)
    ids = emb.encoder.tokenizer(long_text)["input_ids"]
    tok = emb.encoder.tokenizer
    parts = windows(ids, 16, 4, cls_id=tok.cls_token_id, sep_id=tok.sep_token_id)
    assert len(parts) > 2 and all(len(p) <= 16 for p in parts)
    by_hand = combine(np.concatenate([emb.runtime.forward(*emb.pad([p], len(p))) for p in parts]), False)
    assert np.abs(got[1] - by_hand).max() <= 1e-5
    assert isinstance(emb.stats, EmbedStats)
    assert emb.stats.windows == 2 + len(parts) and emb.stats.split == 1 and emb.stats.rows == 3
    assert emb.stats.real_tokens == sum(len(p) for p in parts) + sum(
        len(tok(t)["input_ids"]) for t in (texts[0], texts[2]))


def test_tiny_results_are_independent_of_batching(tiny_model_dir: Path, tiny: Embedder) -> None:
    texts = [" ".join(["word"] * n) for n in (1, 30, 5, 80, 2, 12)]
    small = Embedder(str(tiny_model_dir), backend="torch", threads=1, max_batch_tokens=512, max_batch_size=2)
    assert np.abs(small.encode(texts) - tiny.encode(texts)).max() <= 1e-5
    assert small.stats.batches >= 3
