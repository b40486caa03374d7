"""Unit tests for padless.planner: the contract of plan() and padding_fraction()."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from padless.planner import Batch, BatchPolicy, padded_width, padding_fraction, plan

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def valid_problems(draw, max_items: int = 60, max_len: int = 200):
    """(lengths, max_batch_tokens, max_batch_size) such that every length fits in max_batch_tokens."""
    lengths = draw(st.lists(st.integers(min_value=0, max_value=max_len), min_size=0, max_size=max_items))
    longest = max([1, *lengths])
    max_batch_tokens = draw(st.integers(min_value=longest, max_value=longest * 40))
    max_batch_size = draw(st.integers(min_value=1, max_value=70))
    return lengths, max_batch_tokens, max_batch_size


def _eff(length: int) -> int:
    return max(1, length)


# ---------------------------------------------------------------- property tests


# The price of one more batch: the CPU's 32, a CUDA GPU's 2048, and anything between or beyond.
OVERHEADS = st.one_of(st.sampled_from([0, 32, 2048]), st.integers(min_value=0, max_value=100_000))


@FAST
@given(valid_problems(), OVERHEADS)
def test_every_index_appears_exactly_once(problem, overhead):
    lengths, mbt, mbs = problem
    batches = plan(lengths, BatchPolicy(max_batch_tokens=mbt, max_batch_size=mbs, batch_overhead_tokens=overhead))
    seen = [i for b in batches for i in b.indices]
    assert sorted(seen) == list(range(len(lengths)))
    assert all(b.rows >= 1 for b in batches)


@FAST
@given(valid_problems(), OVERHEADS)
def test_batches_respect_row_and_token_limits(problem, overhead):
    lengths, mbt, mbs = problem
    for b in plan(lengths, BatchPolicy(max_batch_tokens=mbt, max_batch_size=mbs, batch_overhead_tokens=overhead)):
        assert b.rows <= mbs
        assert b.padded_tokens == b.rows * b.width
        assert b.padded_tokens <= mbt


@FAST
@given(valid_problems())
def test_width_is_longest_member_with_zero_counting_as_one(problem):
    lengths, mbt, mbs = problem
    for b in plan(lengths, BatchPolicy(max_batch_tokens=mbt, max_batch_size=mbs)):
        assert b.width == max(_eff(lengths[i]) for i in b.indices)
        assert b.width >= 1


@FAST
@given(valid_problems())
def test_scattering_batch_results_restores_input_order(problem):
    lengths, mbt, mbs = problem
    # Each item carries a unique payload; a "runtime" only sees the batch's payloads in batch order.
    payloads = [f"item-{i}-len-{n}" for i, n in enumerate(lengths)]
    out: list[str | None] = [None] * len(lengths)
    for b in plan(lengths, BatchPolicy(max_batch_tokens=mbt, max_batch_size=mbs)):
        batch_in = [payloads[i] for i in b.indices]
        batch_out = [p.upper() for p in batch_in]
        for pos, result in zip(b.indices, batch_out):
            assert out[pos] is None
            out[pos] = result
    assert out == [p.upper() for p in payloads]


@FAST
@given(valid_problems())
def test_items_are_stably_sorted_by_length_across_batches(problem):
    lengths, mbt, mbs = problem
    batches = plan(lengths, BatchPolicy(max_batch_tokens=mbt, max_batch_size=mbs))
    flat = [i for b in batches for i in b.indices]
    # Stable sort: equal lengths keep input order.
    assert flat == sorted(range(len(lengths)), key=lambda i: lengths[i])
    for a, b in zip(batches, batches[1:]):
        assert max(lengths[i] for i in a.indices) <= min(lengths[i] for i in b.indices)
        assert a.width <= b.width


@FAST
@given(st.lists(st.integers(min_value=0, max_value=100), min_size=0, max_size=30), st.integers(2, 100), st.data())
def test_length_over_max_batch_tokens_raises(lengths, too_long, data):
    lengths = data.draw(st.permutations([*lengths, too_long]))
    mbt = data.draw(st.integers(min_value=1, max_value=too_long - 1))
    assume(max(lengths) > mbt)
    with pytest.raises(ValueError, match="exceeds max_batch_tokens"):
        plan(lengths, BatchPolicy(max_batch_tokens=mbt, max_batch_size=8))


@FAST
@given(valid_problems(max_items=8, max_len=12), st.integers(min_value=0, max_value=50))
def test_dp_cost_is_optimal_over_all_consecutive_cuts(problem, overhead):
    """Brute force every way to cut the sorted items into consecutive feasible runs; the DP must reach the minimum
    of padded tokens + overhead × batches."""
    lengths, mbt, mbs = problem
    batches = plan(lengths, BatchPolicy(max_batch_tokens=mbt, max_batch_size=mbs, batch_overhead_tokens=overhead))
    dp_cost = sum(b.padded_tokens for b in batches) + overhead * len(batches)

    if not lengths:
        assert batches == []
        return
    assert dp_cost == _brute_force_best(lengths, mbt, mbs, overhead, lambda longest: longest)


def _brute_force_best(lengths, mbt, mbs, overhead, width_of):
    """Least padded tokens + overhead × batches over every cut of the sorted items into consecutive feasible runs,
    each run priced at ``width_of(its longest)``."""
    s = sorted(_eff(n) for n in lengths)
    n = len(s)
    best = None
    for mask in range(1 << (n - 1)):
        cuts = [0] + [k + 1 for k in range(n - 1) if mask >> k & 1] + [n]
        cost = 0
        for a, b in itertools.pairwise(cuts):
            rows, width = b - a, width_of(s[b - 1])
            if rows > mbs or rows * width > mbt:
                break
            cost += rows * width + overhead
        else:
            best = cost if best is None else min(best, cost)
    return best


@FAST
@given(valid_problems(), st.integers(min_value=1, max_value=40), st.one_of(st.none(), st.integers(1, 300)))
def test_rounded_widths_are_multiples_within_the_caps_and_never_below_the_longest_row(problem, multiple, max_width):
    lengths, mbt, mbs = problem
    policy = BatchPolicy(max_batch_tokens=mbt, max_batch_size=mbs, width_multiple=multiple, max_width=max_width)
    batches = plan(lengths, policy)
    assert sorted(i for b in batches for i in b.indices) == list(range(len(lengths)))
    cap = mbt if max_width is None else min(mbt, max_width)
    for b in batches:
        longest = max(_eff(lengths[i]) for i in b.indices)
        assert b.width >= longest
        assert b.rows <= mbs and b.padded_tokens <= mbt
        # Rounded up to the next multiple, unless a cap stops it (then the cap, or the row itself if longer).
        assert b.width == max(longest, min(-(-longest // multiple) * multiple, cap))
        if b.width % multiple:
            assert b.width in (cap, longest)
        assert b.width == policy.width(longest) and policy.width_cap == cap  # the policy's own width rule


@FAST
@given(valid_problems(max_items=8, max_len=40), st.integers(min_value=0, max_value=50), st.integers(2, 16))
def test_dp_cost_with_rounded_widths_is_optimal_over_all_consecutive_cuts(problem, overhead, multiple):
    """As above, with each run priced at its rounded width: rounding must not break the DP's optimality."""
    lengths, mbt, mbs = problem
    batches = plan(lengths, BatchPolicy(max_batch_tokens=mbt, max_batch_size=mbs, batch_overhead_tokens=overhead,
                                        width_multiple=multiple))
    if not lengths:
        assert batches == []
        return
    best = _brute_force_best(lengths, mbt, mbs, overhead, lambda longest: padded_width(longest, multiple, mbt))
    assert sum(b.padded_tokens for b in batches) + overhead * len(batches) == best


def test_padded_width_examples():
    assert padded_width(3, 16, 512) == 16
    assert padded_width(16, 16, 512) == 16
    assert padded_width(17, 16, 512) == 32
    assert padded_width(500, 16, 510) == 510  # the model's limit caps the rounding
    assert padded_width(511, 16, 510) == 511  # never below the row itself
    assert padded_width(0, 8, 512) == 8  # an empty row still costs one token, rounded
    assert padded_width(7, 1, 512) == 7
    with pytest.raises(ValueError, match="width_multiple"):
        plan([3], BatchPolicy(max_batch_tokens=10, max_batch_size=4, width_multiple=0))


def _naive_padded(lengths, chunk):
    s = sorted(_eff(n) for n in lengths)
    return sum(len(s[k : k + chunk]) * s[k : k + chunk][-1] for k in range(0, len(s), chunk))


@FAST
@given(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=120), st.integers(1, 40))
def test_dp_never_pads_more_than_fixed_size_chunks(lengths, mbs):
    mbt = mbs * max(1, max(lengths))  # every fixed-size chunk of sorted items is feasible
    batches = plan(lengths, BatchPolicy(max_batch_tokens=mbt, max_batch_size=mbs))
    assert sum(b.padded_tokens for b in batches) <= _naive_padded(lengths, mbs)


# ---------------------------------------------------------------- example tests


def test_empty_input_gives_no_batches():
    assert plan([], BatchPolicy(max_batch_tokens=10, max_batch_size=4)) == []


@pytest.mark.parametrize(("mbt", "mbs"), [(0, 4), (10, 0), (-1, 4), (10, -3)])
def test_non_positive_limits_raise(mbt, mbs):
    with pytest.raises(ValueError):
        plan([1, 2], BatchPolicy(max_batch_tokens=mbt, max_batch_size=mbs))


def test_negative_length_raises():
    with pytest.raises(ValueError, match="non-negative"):
        plan([3, -1, 2], BatchPolicy(max_batch_tokens=10, max_batch_size=4))


def test_length_equal_to_max_batch_tokens_is_accepted():
    batches = plan([5, 10, 1], BatchPolicy(max_batch_tokens=10, max_batch_size=4))
    assert [i for b in batches for i in b.indices] == [2, 0, 1]
    assert batches[-1] == Batch(indices=(1,), width=10)


def test_padding_fraction_known_plan():
    lengths = [1, 2, 3, 4]
    batches = [Batch(indices=(0, 1, 2, 3), width=4)]
    # computed 4*4 = 16, real 1+2+3+4 = 10
    assert padding_fraction(lengths, batches) == pytest.approx(1 - 10 / 16)
    split = [Batch(indices=(0, 1), width=2), Batch(indices=(2, 3), width=4)]
    # computed 2*2 + 2*4 = 12, real 10
    assert padding_fraction(lengths, split) == pytest.approx(1 - 10 / 12)


def test_padding_fraction_of_planned_equal_lengths_is_zero_and_zero_lengths_count_as_one():
    lengths = [7, 3, 7, 3, 0, 0]
    batches = plan(lengths, BatchPolicy(max_batch_tokens=14, max_batch_size=2))
    # Sorted: 0,0 | 3,3 | 7,7 — each batch is homogeneous, so nothing is padded.
    assert [b.indices for b in batches] == [(4, 5), (1, 3), (0, 2)]
    assert [b.width for b in batches] == [1, 3, 7]
    assert padding_fraction(lengths, batches) == 0.0
    assert padding_fraction([], []) == 0.0


def test_overhead_trades_padding_against_batch_count():
    # Separate: padded 1 + 100 = 101 plus 2 overheads; together: 2*100 = 200 plus one overhead.
    apart = plan([100, 1], BatchPolicy(max_batch_tokens=1000, max_batch_size=2, batch_overhead_tokens=64))
    assert apart == [Batch(indices=(1,), width=1), Batch(indices=(0,), width=100)]
    together = plan([100, 1], BatchPolicy(max_batch_tokens=1000, max_batch_size=2, batch_overhead_tokens=200))
    assert together == [Batch(indices=(1, 0), width=100)]


def _realistic_lengths(seed: int, n: int, cap: int) -> list[int]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:  # short: tweets, titles
            out.append(rng.randint(3, 40))
        elif r < 0.9:  # paragraphs
            out.append(rng.randint(40, 200))
        else:  # long documents hitting the cap
            out.append(min(cap, int(rng.lognormvariate(5.5, 0.6))))
    return out


@pytest.mark.parametrize(
    ("seed", "n", "cap", "mbs"),
    [(0, 1000, 512, 64), (1, 333, 512, 32), (2, 2000, 256, 128), (3, 50, 128, 8)],
)
def test_dp_pads_no_more_than_fixed_chunks_on_realistic_mixes(seed, n, cap, mbs):
    lengths = _realistic_lengths(seed, n, cap)
    mbt = mbs * cap  # every fixed-size chunk is feasible
    batches = plan(lengths, BatchPolicy(max_batch_tokens=mbt, max_batch_size=mbs))
    dp = sum(b.padded_tokens for b in batches)
    naive = _naive_padded(lengths, mbs)
    assert dp <= naive
    assert dp >= sum(max(1, x) for x in lengths)


def test_dp_strictly_beats_fixed_chunks_on_a_skewed_mix():
    lengths = [100, 10, 100, 10, 100, 10]
    batches = plan(lengths, BatchPolicy(max_batch_tokens=400, max_batch_size=4))
    naive = _naive_padded(lengths, 4)  # [10,10,10,100] -> 400, [100,100] -> 200
    assert naive == 600
    assert batches == [Batch(indices=(1, 3, 5), width=10), Batch(indices=(0, 2, 4), width=100)]
    assert sum(b.padded_tokens for b in batches) == 330 < naive


def test_plan_is_deterministic():
    lengths = _realistic_lengths(7, 500, 512)
    first = plan(lengths, BatchPolicy(max_batch_tokens=8192, max_batch_size=64))
    for _ in range(3):
        assert plan(list(lengths), BatchPolicy(max_batch_tokens=8192, max_batch_size=64)) == first
    assert plan(tuple(lengths), BatchPolicy(max_batch_tokens=8192, max_batch_size=64)) == first
