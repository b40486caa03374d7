"""The batch planner: a pure function from token lengths to batches.

Contract of :func:`plan`:

* every index ``0..len(lengths)-1`` appears in exactly one batch;
* the limits come in one :class:`BatchPolicy`; each batch holds at most ``max_batch_size`` rows and costs at most
  ``max_batch_tokens`` padded tokens, where a batch's cost is ``rows × longest row`` (what a padded forward pass
  really computes);
* batches list their members as positions in the *input*, so results scatter straight back into input order;
* a batch's width is its longest row rounded up to a multiple of ``width_multiple`` (1: no rounding), but never
  above ``max_width`` or ``max_batch_tokens`` and never below the longest row (see :func:`padded_width`);
* a length larger than ``max_batch_tokens`` raises :class:`ValueError` (admission must reject it earlier).

Items are sorted by length (stable, so equal lengths keep input order) and cut into consecutive runs. The cut points
are chosen by dynamic programming to minimise ``padded tokens + batch_overhead_tokens × batches``: a greedy fill
would put 3-token and 10-token texts in one 800-row batch, while splitting everywhere would pay the fixed cost of a
forward call too often. ``batch_overhead_tokens`` is that fixed cost expressed in tokens of work.

``width_multiple`` exists for backends whose kernels run faster on aligned widths than on exact ones (OpenVINO's
bf16 and int8 kernels on AMX work in tiles of 16 rows: padding to a multiple of 16 computes more tokens in less
time, and fewer distinct shapes means fewer first-time kernel compilations). The dynamic programme prices each
batch at its rounded width, so it still minimises what is really computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The fixed cost of one forward call, in tokens of work, on a CPU: the default price of one more batch.
BATCH_OVERHEAD_TOKENS = 32


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


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPolicy:
    """Everything :func:`plan` needs besides the lengths: the batch limits, width rounding and per-batch price.
    ``Classifier.policy`` resolves one from a :class:`~padless.config.BatchConfig` and the runtime."""

    max_batch_tokens: int
    max_batch_size: int
    width_multiple: int = 1
    max_width: int | None = None  # a model's token limit: no batch is wider
    batch_overhead_tokens: int = BATCH_OVERHEAD_TOKENS

    @property
    def width_cap(self) -> int:
        """The widest a batch may be: ``max_width``, at most ``max_batch_tokens``."""
        return self.max_batch_tokens if self.max_width is None else min(self.max_width, self.max_batch_tokens)

    def width(self, longest: int) -> int:
        """A batch's padded width for its longest row (see :func:`padded_width`)."""
        return padded_width(longest, self.width_multiple, self.width_cap)


def plan(lengths: Sequence[int], policy: BatchPolicy) -> list[Batch]:
    """Pack items of the given token lengths into batches (see the module docstring for the contract)."""
    max_batch_tokens, max_batch_size = policy.max_batch_tokens, policy.max_batch_size
    if max_batch_tokens < 1 or max_batch_size < 1 or policy.width_multiple < 1:
        raise ValueError("max_batch_tokens, max_batch_size and width_multiple must be positive")
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
    widths = [policy.width(n) for n in sorted_len]  # non-decreasing, like sorted_len

    # best[j]: least cost of packing the first j sorted items; cut[j]: start of the last batch in that packing.
    # The last batch of a prefix ending at j-1 has width sorted_len[j-1] (lengths ascend), so its cost is
    # (j - i) * widths[j-1] for a start i; rows are capped by both limits.
    inf = float("inf")
    best = [0.0] + [inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        width = widths[j - 1]
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
        best[j] = cand_best + policy.batch_overhead_tokens
        cut[j] = cand_i

    batches: list[Batch] = []
    j = n
    while j > 0:
        i = cut[j]
        batches.append(Batch(indices=tuple(order[i:j]), width=widths[j - 1]))
        j = i
    batches.reverse()
    return batches


def padded_width(longest: int, multiple: int, cap: int) -> int:
    """``longest`` rounded up to a multiple of ``multiple``, at most ``cap`` (a model's or a batch's limit), at least
    ``longest``."""
    rounded = -(-max(1, longest) // multiple) * multiple
    return max(longest, min(rounded, cap))


def padding_fraction(lengths: Sequence[int], batches: Sequence[Batch]) -> float:
    """Padded tokens computed / all tokens computed, for a plan over ``lengths``."""
    computed = sum(b.padded_tokens for b in batches)
    real = sum(max(1, lengths[i]) for b in batches for i in b.indices)
    return 0.0 if computed == 0 else 1.0 - real / computed
