"""The resume decision (padless.commit.decide): each branch, and a kill after every step of a simulated run.

The simulated disk follows the job's write protocol (padless.job.run_job and padless.sinks): the state file is
replaced atomically; text output is appended, and whatever was written since its last fsync may survive a kill only
in part (a torn tail); Parquet output is part files, merged into a temporary file and renamed into place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from padless.commit import (
    DATASET_FORMAT,
    STATE_SUFFIX,
    AlreadyComplete,
    Continue,
    Counts,
    Decision,
    OutputFacts,
    Refuse,
    StartFresh,
    after_commit,
    completed,
    decide,
    new_state,
    read_state,
    write_state,
)

FP = "fingerprint of the input and options"
COLUMNS = ["text", "label", "score", "error"]
CSV_HEADER = b"text,label,score,error\n"


def _row(i: int) -> bytes:
    return f"row {i}\n".encode()


def _errored(i: int) -> bool:
    return i % 4 == 3  # some rows carry an error, so the three counts differ


def _counts_of(ids: range) -> Counts:
    errored = sum(_errored(i) for i in ids)
    return Counts(rows_in=len(ids), rows_scored=len(ids) - errored, rows_errored=errored)


def _plus(a: Counts, b: Counts) -> Counts:
    return Counts(a.rows_in + b.rows_in, a.rows_scored + b.rows_scored, a.rows_errored + b.rows_errored)


@dataclass
class Disk:
    """What a kill leaves behind: the state file, the text output, or Parquet's parts, merge file and output."""

    state: dict[str, Any] | None = None
    text: bytes | None = None  # the text output as the OS holds it (None: no file)
    unsynced: bytes = b""  # written by the running job since its last fsync: a kill keeps only a prefix
    parts: dict[int, list[int]] = field(default_factory=dict)  # part number -> the input rows it holds
    parts_dir: bool = False
    merge_tmp: list[int] | None = None
    parquet: list[int] | None = None  # the Parquet output's rows (None: no file)

    def facts(self, fmt: str) -> OutputFacts:
        if fmt == "parquet":
            return OutputFacts(exists=self.parquet is not None, size=_parquet_size(self.parquet),
                               parts=frozenset(self.parts), parts_dir=self.parts_dir)
        return OutputFacts(exists=self.text is not None, size=len(self.text or b""))

    def kill(self, torn: float) -> None:
        if self.text is not None:
            self.text += self.unsynced[:int(len(self.unsynced) * torn)]
        self.unsynced = b""

    def fsync(self) -> int:
        assert self.text is not None
        self.text += self.unsynced
        self.unsynced = b""
        return len(self.text)


def _parquet_size(rows: list[int] | None) -> int:
    return len(json.dumps(rows)) if rows is not None else 0  # a stand-in for the file's size in bytes


def _decide(disk: Disk, fmt: str, *, resume: bool = True, overwrite: bool = False) -> Decision:
    return decide(disk.state, disk.facts(fmt), output="out", fmt=fmt, fingerprint=FP, resume=resume,
                  overwrite=overwrite)


def text_job(disk: Disk, fmt: str, n_rows: int, chunk: int, decision: Decision) -> Iterator[str]:
    """run_job with a text sink, one yield after each step a kill can follow."""
    if isinstance(decision, Continue):
        assert disk.state is not None and disk.text is not None
        state, rows_done, counts = disk.state, decision.rows_done, decision.counts
        disk.text = disk.text[:decision.committed]  # TextSink.open(committed) truncates the torn tail
    else:
        assert isinstance(decision, StartFresh)
        state, rows_done, counts = new_state(FP, fmt, COLUMNS), 0, Counts()
        disk.state = state
        yield "state-written"
        disk.text, disk.unsynced = b"", CSV_HEADER if fmt == "csv" else b""
    yield "output-opened"
    for start in range(rows_done, n_rows, chunk):
        ids = range(start, min(start + chunk, n_rows))
        disk.unsynced += b"".join(_row(i) for i in ids)
        yield "chunk-written"
        committed = disk.fsync()
        yield "committed"
        counts = _plus(counts, _counts_of(ids))
        state = after_commit(state, ids[-1] + 1, committed, counts)
        disk.state = state
        yield "state-updated"
    size = disk.fsync()  # TextSink.finish
    disk.state = completed(state, size)
    yield "completed"


def parquet_job(disk: Disk, n_rows: int, chunk: int, decision: Decision) -> Iterator[str]:
    """run_job with the Parquet sink, one yield after each step a kill can follow."""
    if isinstance(decision, Continue):
        assert disk.state is not None
        state, rows_done, counts, parts = disk.state, decision.rows_done, decision.counts, decision.committed
        disk.parts = {n: rows for n, rows in disk.parts.items() if n < parts}  # drop parts after the last commit
    else:
        assert isinstance(decision, StartFresh)
        state, rows_done, counts, parts = new_state(FP, "parquet", COLUMNS), 0, Counts(), 0
        disk.state = state
        yield "state-written"
        disk.parts, disk.merge_tmp, disk.parquet = {}, None, None
    disk.parts_dir = True
    yield "output-opened"
    for start in range(rows_done, n_rows, chunk):
        ids = range(start, min(start + chunk, n_rows))
        disk.parts[parts] = list(ids)
        parts += 1
        yield "chunk-written"
        yield "committed"
        counts = _plus(counts, _counts_of(ids))
        state = after_commit(state, ids[-1] + 1, parts, counts)
        disk.state = state
        yield "state-updated"
    disk.merge_tmp = []
    for n in range(parts):
        disk.merge_tmp += disk.parts[n]
        yield "merge-started"
    disk.parquet, disk.merge_tmp = disk.merge_tmp, None
    yield "merged"
    disk.state = completed(state, _parquet_size(disk.parquet))
    yield "completed"
    disk.parts, disk.parts_dir = {}, False
    yield "parts-removed"


def _apply(disk: Disk, fmt: str, n_rows: int, chunk: int, decision: Decision, kill_after: int | None,
           torn: float) -> None:
    """Carry out a decision as the job would, killed after ``kill_after`` steps (None: runs to the end; 0: killed
    before the job starts, as at ``before-model-load``)."""
    assert not isinstance(decision, Refuse), decision.message
    if kill_after == 0:
        return
    if isinstance(decision, AlreadyComplete):
        if decision.remove_parts:
            disk.parts, disk.parts_dir = {}, False
        return
    steps = parquet_job(disk, n_rows, chunk, decision) if fmt == "parquet" else text_job(disk, fmt, n_rows, chunk,
                                                                                           decision)
    for taken, _ in enumerate(steps, start=1):
        if taken == kill_after:
            disk.kill(torn)
            return


def _expected_output(fmt: str, n_rows: int) -> Any:
    if fmt == "parquet":
        return list(range(n_rows))
    return (CSV_HEADER if fmt == "csv" else b"") + b"".join(_row(i) for i in range(n_rows))


@settings(max_examples=400, deadline=None)
@given(fmt=st.sampled_from(["jsonl", "csv", "parquet"]), n_rows=st.integers(0, 23), chunk=st.integers(1, 6),
       kills=st.lists(st.tuples(st.integers(0, 40), st.floats(0, 1)), max_size=4))
def test_every_row_once_in_order_whatever_the_kills(fmt: str, n_rows: int, chunk: int,
                                                     kills: list[tuple[int, float]]) -> None:
    """Kill the job after any step, any number of times; --resume always finishes the exact output."""
    disk = Disk()
    _apply(disk, fmt, n_rows, chunk, _decide(disk, fmt, resume=False), *kills[0] if kills else (None, 0.0))
    for kill_after, torn in [*kills[1:], (None, 0.0)]:
        plain = _decide(disk, fmt, resume=False)  # a rerun without flags never touches what a kill left
        if disk.state is not None or disk.facts(fmt).exists:
            assert isinstance(plain, Refuse) and "--resume" in plain.message
        else:
            assert plain == StartFresh()
        _apply(disk, fmt, n_rows, chunk, _decide(disk, fmt), kill_after, torn)

    got = disk.parquet if fmt == "parquet" else disk.text
    assert got == _expected_output(fmt, n_rows)
    assert disk.state is not None and disk.state["complete"] is True
    again = _decide(disk, fmt)
    assert again == AlreadyComplete(_counts_of(range(n_rows)), n_rows, remove_parts=disk.parts_dir)
    _apply(disk, fmt, n_rows, chunk, again, None, 0.0)
    assert not disk.parts_dir and not disk.parts


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_a_kill_after_each_named_step_resumes(fmt: str) -> None:
    """Every step name the job yields is a place a kill is survived (the property test covers the counts)."""
    n_rows, chunk = 7, 3
    probe = Disk()
    names = list(parquet_job(probe, n_rows, chunk, StartFresh()) if fmt == "parquet"
                 else text_job(probe, fmt, n_rows, chunk, StartFresh()))
    for kill_after in range(len(names) + 1):
        disk = Disk()
        _apply(disk, fmt, n_rows, chunk, StartFresh(), kill_after, 0.5)
        _apply(disk, fmt, n_rows, chunk, _decide(disk, fmt), None, 0.0)
        assert (disk.parquet if fmt == "parquet" else disk.text) == _expected_output(fmt, n_rows), names[:kill_after]


# Each branch of the decision, spelled out.

def _state(*, rows_done: int = 0, committed: int | None = None, complete: bool = False, size: int | None = None,
           fingerprint: str = FP, fmt: str = "jsonl") -> dict[str, Any]:
    state = new_state(fingerprint, fmt, COLUMNS)
    if committed is not None:
        state = after_commit(state, rows_done, committed, Counts(rows_done, rows_done - 1, 1))
    return completed(state, size or 0) if complete else state


def _decide_on(state: dict[str, Any] | None, facts: OutputFacts, fmt: str = "jsonl", **flags: bool) -> Decision:
    return decide(state, facts, output="out.jsonl", fmt=fmt, fingerprint=FP, resume=flags.get("resume", False),
                  overwrite=flags.get("overwrite", False))


NOTHING = OutputFacts(exists=False)


def test_nothing_on_disk_runs_from_scratch_with_or_without_resume() -> None:
    assert _decide_on(None, NOTHING) == StartFresh()
    assert _decide_on(None, NOTHING, resume=True) == StartFresh()


@pytest.mark.parametrize("on_disk", ["output", "state", "both"])
def test_plain_rerun_refuses_whatever_exists(on_disk: str) -> None:
    state = _state(rows_done=3, committed=40, complete=on_disk == "both", size=40) if on_disk != "output" else None
    facts = OutputFacts(exists=on_disk != "state", size=40 if on_disk != "state" else 0)
    decision = _decide_on(state, facts)
    assert isinstance(decision, Refuse)
    assert decision.message == "out.jsonl already exists; pass --resume to continue it or --overwrite to replace it"


def test_overwrite_starts_fresh_whatever_the_state_says() -> None:
    stale = _state(fingerprint="another run", committed=10, rows_done=2)
    assert _decide_on(stale, OutputFacts(exists=True, size=99), overwrite=True) == StartFresh()
    assert _decide_on({}, OutputFacts(exists=True, size=0), overwrite=True) == StartFresh()


def test_resume_and_overwrite_together_are_refused() -> None:
    decision = _decide_on(None, NOTHING, resume=True, overwrite=True)
    assert isinstance(decision, Refuse) and "not both" in decision.message


@pytest.mark.parametrize("size", [0, 1234])
def test_output_without_state_is_refused_never_complete(size: int) -> None:
    """The reported bug: killed before the first commit left an output and no state; that is not 'done'."""
    decision = _decide_on(None, OutputFacts(exists=True, size=size), resume=True)
    assert isinstance(decision, Refuse)
    assert "--overwrite" in decision.message and "out.jsonl.padless-state.json" in decision.message


def test_other_fingerprint_or_format_is_refused() -> None:
    for state in (_state(fingerprint="another", committed=10, rows_done=2), _state(committed=10, rows_done=2,
                                                                                     fmt="csv")):
        decision = _decide_on(state, OutputFacts(exists=True, size=10), resume=True)
        assert isinstance(decision, Refuse) and "other options" in decision.message
        assert "--overwrite" in decision.message


@pytest.mark.parametrize("state", [{}, {"fingerprint": FP, "rows_done": 1, "committed": 0, "summary": {}},
                                   {**new_state(FP, "jsonl", COLUMNS), "version": 1},
                                   {**new_state(FP, "jsonl", COLUMNS), "rows_done": -1},
                                   {**new_state(FP, "jsonl", COLUMNS), "complete": True}])
def test_malformed_or_old_state_is_refused(state: dict[str, Any]) -> None:
    decision = _decide_on(state, OutputFacts(exists=True, size=10), resume=True)
    assert isinstance(decision, Refuse) and "--overwrite" in decision.message


def test_complete_state_with_its_output_is_already_complete_with_its_counts() -> None:
    state = _state(rows_done=5, committed=50, complete=True, size=50)
    assert _decide_on(state, OutputFacts(exists=True, size=50), resume=True) == \
        AlreadyComplete(Counts(5, 4, 1), 5, remove_parts=False)


def test_complete_state_with_leftover_parts_removes_them() -> None:
    state = _state(rows_done=5, committed=2, complete=True, size=777, fmt="parquet")
    facts = OutputFacts(exists=True, size=777, parts=frozenset({0, 1}), parts_dir=True)
    assert _decide_on(state, facts, fmt="parquet", resume=True) == AlreadyComplete(Counts(5, 4, 1), 5,
                                                                                   remove_parts=True)


@pytest.mark.parametrize("facts", [OutputFacts(exists=True, size=49), OutputFacts(exists=True, size=51), NOTHING])
def test_complete_state_but_output_changed_or_gone_is_refused(facts: OutputFacts) -> None:
    decision = _decide_on(_state(rows_done=5, committed=50, complete=True, size=50), facts, resume=True)
    assert isinstance(decision, Refuse) and "--overwrite" in decision.message


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_state_before_the_first_commit_starts_over(fmt: str) -> None:
    facts = OutputFacts(exists=True, size=0) if fmt == "jsonl" else OutputFacts(exists=False, parts_dir=True)
    assert _decide_on(_state(fmt=fmt), facts, fmt=fmt, resume=True) == StartFresh()


def test_text_output_continues_from_its_offset_even_with_a_torn_tail() -> None:
    state = _state(rows_done=4, committed=60)
    for size in (60, 75):
        assert _decide_on(state, OutputFacts(exists=True, size=size), resume=True) == \
            Continue(4, 60, Counts(4, 3, 1), COLUMNS)


@pytest.mark.parametrize("facts", [OutputFacts(exists=True, size=59), NOTHING])
def test_text_output_shorter_than_its_commit_is_refused(facts: OutputFacts) -> None:
    decision = _decide_on(_state(rows_done=4, committed=60), facts, resume=True)
    assert isinstance(decision, Refuse) and "shorter" in decision.message and "--overwrite" in decision.message


def test_parquet_continues_from_its_part_count_and_refuses_a_missing_part() -> None:
    state = _state(rows_done=6, committed=3, fmt="parquet")
    whole = OutputFacts(exists=False, parts=frozenset({0, 1, 2, 3}), parts_dir=True)  # part 3: after the commit
    assert _decide_on(state, whole, fmt="parquet", resume=True) == Continue(6, 3, Counts(6, 5, 1), COLUMNS)
    holed = OutputFacts(exists=True, size=10, parts=frozenset({0, 2}), parts_dir=True)
    decision = _decide_on(state, holed, fmt="parquet", resume=True)
    assert isinstance(decision, Refuse) and "1 committed part" in decision.message


def test_state_file_round_trips_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / ("out.jsonl" + STATE_SUFFIX)
    assert read_state(path) is None
    state = _state(rows_done=4, committed=60)
    write_state(path, state)
    write_state(path, completed(state, 60))
    assert read_state(path) == completed(state, 60)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    path.write_text("{not json")
    assert read_state(path) == {}


# The Ray Data job's dataset folder (DATASET_FORMAT): its parts are its commits, its state lives inside it.

def _dataset(state: dict[str, Any] | None, facts: OutputFacts, **flags: bool) -> Decision:
    return decide(state, facts, output="vectors", fmt=DATASET_FORMAT, fingerprint=FP, state_file=DATASET_STATE,
                  resume=flags.get("resume", False), overwrite=flags.get("overwrite", False))


DATASET_STATE = "vectors/_padless_state.json"


def test_dataset_runs_fresh_into_nothing_and_refuses_a_plain_rerun() -> None:
    assert _dataset(None, NOTHING) == StartFresh()
    decision = _dataset(new_state(FP, DATASET_FORMAT, COLUMNS), OutputFacts(exists=True))
    assert isinstance(decision, Refuse) and "--resume" in decision.message


def test_dataset_resumes_from_its_parts_whatever_has_been_written() -> None:
    """Killed before the first part or after some: the job reads the finished row ids, so it continues either way
    (a state written before any part is not 'start over' here, unlike a file output's)."""
    state = new_state(FP, DATASET_FORMAT, COLUMNS)
    assert state["committed"] == 0
    for facts in (OutputFacts(exists=True), OutputFacts(exists=True, size=5000)):
        assert _dataset(state, facts, resume=True) == Continue(0, 0, Counts(), COLUMNS)


def test_dataset_complete_only_while_its_parts_are_unchanged() -> None:
    state = completed(after_commit(new_state(FP, DATASET_FORMAT, COLUMNS), 7, 3, Counts(7, 6, 1)), 5000)
    assert _dataset(state, OutputFacts(exists=True, size=5000), resume=True) == AlreadyComplete(Counts(7, 6, 1), 7,
                                                                                               remove_parts=False)
    decision = _dataset(state, OutputFacts(exists=True, size=4000), resume=True)
    assert isinstance(decision, Refuse) and "has changed" in decision.message


@pytest.mark.parametrize("state", [None, {}, {"fingerprint": FP, "complete": False, "input": "in"}])
def test_dataset_without_a_readable_state_is_refused_naming_the_state_inside(state: dict[str, Any] | None) -> None:
    """The last case is the state an older padless wrote for --ray: it cannot be vouched for, so it is refused."""
    decision = _dataset(state, OutputFacts(exists=True, size=10), resume=True)
    assert isinstance(decision, Refuse) and "--overwrite" in decision.message
    assert ("_padless_state.json in it" if state is None else DATASET_STATE) in decision.message
