"""Long documents and embedding vectors, in numpy: a text longer than the model's limit split into overlapping
windows, its window vectors combined into one, and Matryoshka truncation.

Pure functions; no torch, no tokenizer. A text's ids come in with their special tokens (``[CLS] … [SEP]``), as the
tokenizer gave them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NORM_EPS = 1e-12  # torch.nn.functional.normalize's default eps: a zero vector stays zero


def windows(ids: Sequence[int], max_len: int, overlap: int, *, cls_id: int | None,
            sep_id: int | None) -> list[list[int]]:
    """Split a tokenized text into windows of at most ``max_len`` ids each, every one wrapped in the text's own
    ``cls_id`` … ``sep_id`` (``None``: the tokenizer adds no such token). Consecutive windows share exactly
    ``overlap`` content tokens; together they cover every content token in order; a text that fits is returned as
    its one window, unchanged. ValueError for ids not wrapped in those tokens or an ``overlap`` not below the room a
    window has for content (``max_len`` minus the special tokens)."""
    head = [] if cls_id is None else [cls_id]
    tail = [] if sep_id is None else [sep_id]
    specials = len(head) + len(tail)
    ids = list(ids)
    if len(ids) < specials or ids[:len(head)] != head or ids[len(ids) - len(tail):] != tail:
        raise ValueError(f"ids must start with {head} and end with {tail} (the tokenizer's special tokens)")
    room = max_len - specials
    if not 0 <= overlap < room:
        raise ValueError(f"overlap must be in 0..{room - 1} for max_len {max_len} ({specials} special tokens); "
                         f"got {overlap}")
    if len(ids) <= max_len:
        return [ids]
    content = ids[len(head):len(ids) - len(tail)]
    step = room - overlap
    out: list[list[int]] = []
    start = 0
    while True:
        out.append(head + content[start:start + room] + tail)
        if start + room >= len(content):
            return out
        start += step


def _l2(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, NORM_EPS)).astype(vectors.dtype, copy=False)


def combine(vectors: np.ndarray, normalize: bool) -> np.ndarray:
    """One text's vector from its windows' vectors ``[windows, D]``: their mean, L2-normalised when the model
    normalises (``normalize``); same dtype as the input. ValueError for no windows or a non-2-D array."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"combine needs a [windows, D] array with at least one window; got shape {vectors.shape}")
    mean = vectors.mean(axis=0, dtype=np.float64).astype(vectors.dtype if vectors.dtype.kind == "f" else np.float64)
    return _l2(mean) if normalize else mean


def truncate_dimensions(vectors: np.ndarray, dimensions: int, normalize: bool) -> np.ndarray:
    """Matryoshka truncation: the first ``dimensions`` components of each vector (last axis), L2-normalised again
    when ``normalize``. sentence-transformers' ``truncate_dim`` only slices (``embeddings[..., :truncate_dim]``,
    after the model's Normalize module, so it returns vectors shorter than 1) and its ``normalize_embeddings=True``
    normalises after the slice: ``normalize=False`` is the former, ``normalize=True`` the pair. ValueError for
    ``dimensions`` outside 1..D."""
    vectors = np.asarray(vectors)
    width = vectors.shape[-1] if vectors.ndim else 0
    if not 1 <= dimensions <= width:
        raise ValueError(f"dimensions must be in 1..{width} (the model's embedding size); got {dimensions}")
    cut = vectors[..., :dimensions]
    return _l2(cut) if normalize else cut.copy()
