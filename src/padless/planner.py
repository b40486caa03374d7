"""The batch planner: a pure function from token lengths to batches.

Contract of :func:`plan`:

* every index ``0..len(lengths)-1`` appears in exactly one batch;
* each batch holds at most ``max_batch_size`` rows and costs at most ``max_batch_tokens`` padded tokens, where a
  batch's cost is ``rows × longest row`` (what a padded forward pass really computes);
* batches list their members as positions in the *input*, so results scatter straight back into input order;
* a length larger than ``max_batch_tokens`` raises :class:`ValueError` (admission must reject it earlier).

Items are sorted by length (stable, so equal lengths keep input order) and cut into consecutive runs. The cut points
are chosen by dynamic programming to minimise ``padded tokens + batch_overhead_tokens × batches``: a greedy fill
would put 3-token and 10-token texts in one 800-row batch, while splitting everywhere would pay the fixed cost of a
forward call too often. ``batch_overhead_tokens`` is that fixed cost expressed in tokens of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Batch:
    """One forward pass: input positions (sorted by length) and the padded width."""

    indices: tuple[int, ...]
    width: int

    @property
    def rows(self) -> int:
        return len(self.indices)

    @property
    def padded_tokens(self) -> int:
        return self.rows * self.width


def plan(
    lengths: Sequence[int],
    *,
    max_batch_tokens: int,
    max_batch_size: int,
    batch_overhead_tokens: int = 32,
) -> list[Batch]:
    """Pack items of the given token lengths into batches (see the module docstring for the contract)."""
    if max_batch_tokens < 1 or max_batch_size < 1:
        raise ValueError("max_batch_tokens and max_batch_size must be positive")
    n = len(lengths)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: lengths[i])
    longest = lengths[order[-1]]
    if longest > max_batch_tokens:
        raise ValueError(f"an item of {longest} tokens exceeds max_batch_tokens={max_batch_tokens}")
    if lengths[order[0]] < 0:
        raise ValueError("lengths must be non-negative")
    sorted_len = [max(1, lengths[i]) for i in order]

    # best[j]: least cost of packing the first j sorted items; cut[j]: start of the last batch in that packing.
    # The last batch of a prefix ending at j-1 has width sorted_len[j-1] (lengths ascend), so its cost is
    # (j - i) * sorted_len[j-1] for a start i; rows are capped by both limits.
    inf = float("inf")
    best = [0.0] + [inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        width = sorted_len[j - 1]
        max_rows = min(max_batch_size, max_batch_tokens // width)
        lo = max(0, j - max_rows)
        b = best
        cand_best = inf
        cand_i = j - 1
        for i in range(j - 1, lo - 1, -1):
            cost = b[i] + (j - i) * width
            if cost < cand_best:
                cand_best = cost
                cand_i = i
        best[j] = cand_best + batch_overhead_tokens
        cut[j] = cand_i

    batches: list[Batch] = []
    j = n
    while j > 0:
        i = cut[j]
        batches.append(Batch(indices=tuple(order[i:j]), width=sorted_len[j - 1]))
        j = i
    batches.reverse()
    return batches


def padding_fraction(lengths: Sequence[int], batches: Sequence[Batch]) -> float:
    """Padded tokens computed / all tokens computed, for a plan over ``lengths``."""
    computed = sum(b.padded_tokens for b in batches)
    real = sum(max(1, lengths[i]) for b in batches for i in b.indices)
    return 0.0 if computed == 0 else 1.0 - real / computed
