"""Tokenize each input once, without padding, to learn its true length.

An input is one text, or a **text pair** (premise and hypothesis, query and passage) for sentence-pair models (NLI,
paraphrase, cross-encoder rerankers): a ``(text, text_pair)`` tuple or 2-list, or a ``{"text", "text_pair"}`` dict
as ``transformers.pipeline`` takes it. A pair is encoded as the model expects (``[CLS] a [SEP] b [SEP]`` for BERT),
with ``token_type_ids`` where the model's tokenizer has them, and counts for the planner as its total length.

Contract of :meth:`TextEncoder.encode`: for every input, either its token ids (special tokens included, at most
``max_length`` long; a pair's as :class:`PairIds`, which also carries the segment of each token) or an
:class:`~padless.errors.ItemError` saying why that one item cannot be scored:

* empty or whitespace-only (either text of a pair) → :class:`EmptyInputError`;
* not valid Unicode (lone surrogates, or bytes that were not UTF-8), or not text at all → :class:`DecodeError`;
* longer than ``max_length`` tokens (or ``max_chars`` characters) with truncation off → :class:`TooLongError`.

With truncation on, text is first cut to ``max_chars`` characters (each text of a pair; so a 10 MB line costs no
more than a long one), then the tokenizer truncates to ``max_length`` tokens, keeping the model's closing special
token. A pair is truncated by ``pair_truncation``: ``longest_first`` (transformers' default: tokens come off the
longer text first), ``only_first`` or ``only_second``; a pair that policy cannot fit is :class:`TooLongError`.
``truncation_side="left"`` (TEI's ``truncation_direction``) keeps a text's end instead: the last ``max_chars``
characters, then the last tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from padless.errors import DecodeError, EmptyInputError, ItemError, TooLongError

PAIR_TRUNCATIONS = ("longest_first", "only_first", "only_second")
TRUNCATION_SIDES = ("right", "left")


class PairIds(list[int]):
    """The token ids of a text pair, plus ``type_ids``: each token's segment (0 for the first text and its special
    tokens, 1 for the second), the ``token_type_ids`` a BERT-family model reads. Everything that plans and pads
    treats it as the plain id list it is."""

    __slots__ = ("type_ids",)

    def __init__(self, ids: Sequence[int], type_ids: Sequence[int]) -> None:
        super().__init__(ids)
        self.type_ids = list(type_ids)


def type_ids_of(ids: Sequence[int]) -> list[int] | None:
    """The segment of each token for a pair's ids; None for a single text (all segment 0)."""
    return getattr(ids, "type_ids", None)


def as_pair(item: object) -> tuple[object, object] | None:
    """``(text, text_pair)`` if ``item`` is written as a pair (a 2-tuple, a 2-list, or a text/text_pair dict)."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    if isinstance(item, dict) and set(item) == {"text", "text_pair"}:
        return item["text"], item["text_pair"]
    return None


def char_count(item: object) -> int:
    """Characters of a text or of both texts of a pair (0 for anything else): the admission bound's input."""
    pair = as_pair(item)
    parts = pair if pair is not None else (item,)
    return sum(len(p) for p in parts if isinstance(p, str))


Encoded = list[int] | ItemError


def model_max_length(tokenizer: Any, model_config: Any) -> int:
    """The longest input the model accepts: the tokenizer's limit, bounded by the position table."""
    limits = []
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:
        limits.append(tok_limit)
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style models offset positions by padding_idx + 1.
        offset = 2 if getattr(model_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
        limits.append(positions - offset)
    return min(limits) if limits else 512


class TextEncoder:
    """Wraps a Hugging Face fast tokenizer with padless's truncation and error policy."""

    def __init__(self, tokenizer: Any, *, max_length: int, truncate: bool = True, max_chars: int = 20_000,
                 pair_truncation: str = "longest_first", truncation_side: str = "right",
                 own_tokenizer: bool = False) -> None:
        """``own_tokenizer``: tokenize with a copy of ``tokenizer`` (always for the left side): a fast tokenizer
        keeps its truncation settings in one shared object, so encoders with other limits must not share it
        across threads."""
        if pair_truncation not in PAIR_TRUNCATIONS:
            raise ValueError(f"pair_truncation must be one of {', '.join(PAIR_TRUNCATIONS)}")
        if truncation_side not in TRUNCATION_SIDES:
            raise ValueError(f"truncation_side must be one of {', '.join(TRUNCATION_SIDES)}")
        if own_tokenizer or truncation_side != getattr(tokenizer, "truncation_side", "right"):
            tokenizer = copy.deepcopy(tokenizer)
            tokenizer.truncation_side = truncation_side
        self.tokenizer = tokenizer
        self.truncation_side = truncation_side
        self.max_length = max_length
        self.truncate = truncate
        self.max_chars = max_chars
        self.pair_truncation = pair_truncation
        self.pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0
        # RoBERTa-style tokenizers have no segments: a pair is told apart by its separators alone.
        self.has_segments = "token_type_ids" in (getattr(tokenizer, "model_input_names", None) or ())

    def check(self, text: object) -> str | ItemError:
        """Validate one text before tokenizing; returns the text to tokenize or the item's error."""
        if not isinstance(text, str):
            return DecodeError(f"input is {type(text).__name__}, not text or a (text, text_pair) pair")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return DecodeError("input is not valid UTF-8 text (undecodable bytes or a lone surrogate)")
        if not text.strip():
            return EmptyInputError("input is empty after stripping whitespace")
        if len(text) > self.max_chars:
            if not self.truncate:
                return TooLongError(f"input has {len(text)} characters, over the limit of {self.max_chars}")
            text = text[-self.max_chars:] if self.truncation_side == "left" else text[: self.max_chars]
        return text

    def check_item(self, item: object) -> str | tuple[str, str] | ItemError:
        """Validate a text or both texts of a pair (an error names which text of the pair is wrong)."""
        pair = as_pair(item)
        if pair is None:
            return self.check(item)
        checked = [self.check(part) for part in pair]
        for name, result in zip(("text", "text_pair"), checked):
            if isinstance(result, ItemError):
                return type(result)(f"{name}: {result}")
        return checked[0], checked[1]  # type: ignore[return-value]

    def encode(self, texts: Sequence[object]) -> list[Encoded]:
        """Token ids (or an error) for each text or pair, in input order, unpadded."""
        out: list[Encoded] = [EmptyInputError("not tokenized")] * len(texts)
        singles: list[tuple[int, str]] = []
        pairs: list[tuple[int, tuple[str, str]]] = []
        for pos, item in enumerate(texts):
            checked = self.check_item(item)
            if isinstance(checked, ItemError):
                out[pos] = checked
            elif isinstance(checked, tuple):
                pairs.append((pos, checked))
            else:
                singles.append((pos, checked))
        # With truncation off we still cap at max_length + 1: anything that reaches it is too long, and the
        # tokenizer never has to materialise the ids of a huge input.
        limit = self.max_length if self.truncate else self.max_length + 1
        if singles:
            ids = self.tokenizer([t for _, t in singles], truncation=True, max_length=limit, padding=False,
                                 return_attention_mask=False, return_token_type_ids=False)["input_ids"]
            for (pos, _), item in zip(singles, ids):
                out[pos] = self._limited(list(item))
        if pairs:
            for (pos, _), result in zip(pairs, self._encode_pairs([p for _, p in pairs], limit)):
                out[pos] = result
        return out

    def _encode_pairs(self, pairs: list[tuple[str, str]], limit: int) -> list[Encoded]:
        strategy = self.pair_truncation if self.truncate else "longest_first"
        try:
            enc = self._pair_call(pairs, strategy, limit)
        except Exception:  # noqa: BLE001 - only_first/only_second raise for the whole call when one pair cannot fit
            if len(pairs) == 1:
                return [TooLongError(f"the pair cannot be cut to {self.max_length} tokens by {strategy} "
                                     "(the text it may cut is too short)")]
            return [r for pair in pairs for r in self._encode_pairs([pair], limit)]
        types = enc["token_type_ids"] if self.has_segments else [None] * len(pairs)
        results: list[Encoded] = []
        for ids, type_ids in zip(enc["input_ids"], types):
            limited = self._limited(list(ids))
            if isinstance(limited, ItemError):
                results.append(limited)
            else:
                results.append(PairIds(limited, type_ids if type_ids is not None else [0] * len(limited)))
        return results

    def _pair_call(self, pairs: list[tuple[str, str]], strategy: str, limit: int) -> Any:
        return self.tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=strategy, max_length=limit,
                              padding=False, return_attention_mask=False, return_token_type_ids=self.has_segments)

    def _limited(self, ids: list[int]) -> list[int] | ItemError:
        if len(ids) > self.max_length:
            return TooLongError(
                f"input has more than {self.max_length} tokens (the max_length limit) and truncation is off")
        return ids
