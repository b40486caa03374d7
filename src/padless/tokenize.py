"""Tokenize each input once, without padding, to learn its true length.

Contract of :meth:`TextEncoder.encode`: for every input text, either a list of token ids (special tokens included,
at most ``max_length`` long) or an :class:`~padless.errors.ItemError` saying why that one item cannot be scored:

* empty or whitespace-only → :class:`EmptyInputError`;
* not valid Unicode (lone surrogates, or bytes that were not UTF-8) → :class:`DecodeError`;
* longer than ``max_length`` tokens (or ``max_chars`` characters) with truncation off → :class:`TooLongError`.

With truncation on, text is first cut to ``max_chars`` characters (so a 10 MB line costs no more than a long one),
then the tokenizer truncates to ``max_length`` tokens, keeping the model's closing special token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from padless.errors import DecodeError, EmptyInputError, ItemError, TooLongError

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

    def __init__(self, tokenizer: Any, *, max_length: int, truncate: bool = True, max_chars: int = 20_000) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncate = truncate
        self.max_chars = max_chars
        self.pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0

    def check(self, text: object) -> str | ItemError:
        """Validate one input before tokenizing; returns the text to tokenize or the item's error."""
        if not isinstance(text, str):
            return DecodeError(f"input is {type(text).__name__}, not text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return DecodeError("input is not valid UTF-8 text (undecodable bytes or a lone surrogate)")
        if not text.strip():
            return EmptyInputError("input is empty after stripping whitespace")
        if len(text) > self.max_chars:
            if not self.truncate:
                return TooLongError(f"input has {len(text)} characters, over the limit of {self.max_chars}")
            text = text[: self.max_chars]
        return text

    def encode(self, texts: Sequence[object]) -> list[Encoded]:
        """Token ids (or an error) for each text, in input order, unpadded."""
        out: list[Encoded] = [EmptyInputError("not tokenized")] * len(texts)
        todo_pos: list[int] = []
        todo_text: list[str] = []
        for pos, text in enumerate(texts):
            checked = self.check(text)
            if isinstance(checked, ItemError):
                out[pos] = checked
            else:
                todo_pos.append(pos)
                todo_text.append(checked)
        if not todo_text:
            return out
        # With truncation off we still cap at max_length + 1: anything that reaches it is too long, and the
        # tokenizer never has to materialise the ids of a huge input.
        limit = self.max_length if self.truncate else self.max_length + 1
        ids = self.tokenizer(todo_text, truncation=True, max_length=limit, padding=False,
                             return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        for pos, item in zip(todo_pos, ids):
            if len(item) > self.max_length:
                out[pos] = TooLongError(
                    f"input has more than {self.max_length} tokens (the max_length limit) and truncation is off"
                )
            else:
                out[pos] = list(item)
        return out
