"""A coordinate search that spends its time where the figure moves and keeps a change only when it beats noise.

A point is a dict of setting → value; each :class:`Dimension` lists one setting's values in order. From the start
point (the defaults) the search walks one dimension at a time: it challenges the best point with its neighbour one
step up, then one step down, and keeps walking in a direction while each step wins; once every dimension has been
walked, it walks them again from the new best, until a whole pass changes nothing or the time is up. Each step is a
:data:`Challenge`, which measures the two points and says whether the candidate won. :class:`Interleaved` is the
offline one: both points timed in alternating repeats, the candidate kept only when its median beats the best's by
more than ``noise_factor`` × the larger spread (max − min) of the two, and by ``min_gain``. The serving search
brings its own.

The search is pure: it owns no clock of its own beyond ``clock`` and never sleeps, so tests drive it with a synthetic
noisy figure. :attr:`CoordinateSearch.best` is valid at every moment, so a caller stopped by Ctrl-C keeps it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Point = dict[str, Any]


@dataclass(frozen=True)
class Dimension:
    """One setting searched, its values in order (so a step is to the next value up or down)."""

    name: str
    values: tuple[Any, ...]


@dataclass
class Outcome:
    """One challenge: the candidate point, whether it was kept, and both figures with their spreads (None where a
    figure was not reached, e.g. a server that failed its first rate)."""

    point: Point
    best: Point
    kept: bool
    figure: float | None = None
    spread: float | None = None
    best_figure: float | None = None
    best_spread: float | None = None
    samples: list[float] = field(default_factory=list)
    best_samples: list[float] = field(default_factory=list)
    note: str = ""


Challenge = Callable[[Point, Point], Outcome]


def key(point: Point) -> tuple[tuple[str, Any], ...]:
    """A point as a hashable value, its settings in name order."""
    return tuple(sorted(point.items()))


def spread(samples: Sequence[float]) -> float:
    return max(samples) - min(samples) if samples else 0.0


class Interleaved:
    """The offline challenge: ``measure`` (higher is better) each point ``repeats`` times, alternating which goes
    first, so drift in the machine falls on both; the candidate wins only when its median beats the best's by more
    than ``noise_factor`` × the larger of their spreads and by ``min_gain`` (a fraction of the best's median).

    With 3 repeats and noise_factor 1.5, a candidate no better than the best is kept in under 1% of challenges
    (simulated, Gaussian noise of 1–3%), and one 8% better at 1% noise in 99%."""

    def __init__(self, measure: Callable[[Point], float], *, repeats: int = 3, min_gain: float = 0.01,
                 noise_factor: float = 1.5) -> None:
        if repeats < 2:
            raise ValueError("repeats must be at least 2: one measurement has no spread to judge noise by")
        self.measure, self.repeats, self.min_gain, self.noise_factor = measure, repeats, min_gain, noise_factor

    def pair(self, a: Point, b: Point) -> tuple[list[float], list[float]]:
        """Both points measured ``repeats`` times, interleaved (a b, b a, a b, …)."""
        first: list[float] = []
        second: list[float] = []
        for r in range(self.repeats):
            if r % 2 == 0:
                first.append(self.measure(a))
                second.append(self.measure(b))
            else:
                second.append(self.measure(b))
                first.append(self.measure(a))
        return first, second

    def __call__(self, best: Point, candidate: Point) -> Outcome:
        best_samples, samples = self.pair(best, candidate)
        b, c = statistics.median(best_samples), statistics.median(samples)
        noise = max(spread(best_samples), spread(samples))
        kept = c - b > self.noise_factor * noise and c > b * (1 + self.min_gain)
        return Outcome(candidate, best, kept, figure=c, spread=spread(samples), best_figure=b,
                       best_spread=spread(best_samples), samples=samples, best_samples=best_samples,
                       note=f"{(c / b - 1) * 100:+.1f}% vs noise {noise / b * 100:.1f}%" if b else "")


class CoordinateSearch:
    """See the module docstring. ``valid`` refuses points that cannot run (e.g. more streams than threads);
    ``on_outcome`` sees every challenge as it ends (a progress bar). ``deadline`` is on ``clock``'s scale; a
    challenge is started only while ``clock() + cost < deadline``, where ``cost`` is the longest challenge so far
    (at least ``min_cost``, the caller's estimate before the first one)."""

    def __init__(self, dimensions: Sequence[Dimension], start: Point, challenge: Challenge, *, deadline: float,
                 clock: Callable[[], float] = time.monotonic, valid: Callable[[Point], bool] = lambda p: True,
                 on_outcome: Callable[[Outcome], None] | None = None, min_cost: float = 0.0) -> None:
        for dim in dimensions:
            if start.get(dim.name) not in dim.values:
                raise ValueError(f"the start's {dim.name}={start.get(dim.name)!r} is not among {dim.values}")
        self.dimensions, self.challenge, self.deadline, self.clock = list(dimensions), challenge, deadline, clock
        self.valid, self.on_outcome = valid, on_outcome
        self.best: Point = dict(start)
        self.outcomes: list[Outcome] = []
        self.tried: set[tuple[tuple[str, Any], ...]] = {key(start)}
        self.longest = min_cost
        self.stopped_by = "converged"

    def run(self) -> Point:
        """Walk the dimensions until a pass changes nothing or time runs out (:attr:`stopped_by` says which)."""
        changed = True
        while changed:
            changed = False
            for dim in self.dimensions:
                if self._walk(dim):
                    changed = True
                if self.stopped_by == "time":
                    return self.best
        return self.best

    def _walk(self, dim: Dimension) -> bool:
        """Step along ``dim`` from the best: up while steps win, else down while they win. True if the best moved."""
        moved = False
        for direction in (1, -1):
            while True:
                candidate = self._neighbour(dim, direction)
                if candidate is None:
                    break
                outcome = self._challenge(candidate)
                if outcome is None or not outcome.kept:
                    break
                self.best = dict(candidate)
                moved = True
            if moved or self.stopped_by == "time":
                return moved
        return moved

    def _neighbour(self, dim: Dimension, direction: int) -> Point | None:
        """The next untried, valid point from the best along ``dim`` in ``direction`` (skipping invalid values)."""
        i = dim.values.index(self.best[dim.name]) + direction
        while 0 <= i < len(dim.values):
            candidate = {**self.best, dim.name: dim.values[i]}
            if self.valid(candidate):
                return None if key(candidate) in self.tried else candidate
            i += direction
        return None

    def _challenge(self, candidate: Point) -> Outcome | None:
        if self.clock() + self.longest >= self.deadline:
            self.stopped_by = "time"
            return None
        self.tried.add(key(candidate))
        started = self.clock()
        outcome = self.challenge(self.best, candidate)
        self.longest = max(self.longest, self.clock() - started)
        self.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome
