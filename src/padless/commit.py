"""The commit protocol behind ``padless classify --resume``: the state file, its atomic write, and the pure decision.

A state file ``<output>.padless-state.json`` sits beside every file output. The job writes it *before* it creates or
truncates the output, rewrites it after every committed chunk, and marks it complete only once the final output is
durable on disk, so the state always describes at least what the output really holds. Its fields (``version`` 2):

- ``fingerprint``: the input file (path, size, mtime) and every option that changes the output;
- ``format``, ``columns``: the output format and the columns the first run chose (a resumed run writes the same);
- ``rows_done``: input rows whose output is committed;
- ``committed``: where the output was committed: a byte offset (text formats) or a count of Parquet part files,
  or ``null`` when nothing is committed yet;
- ``counts``: ``rows_in``, ``rows_scored``, ``rows_errored`` of the committed rows;
- ``complete``, ``output_size``: set together once the final output is in place, with its size in bytes.

:func:`decide` turns the state, what is on disk and the flags into what the job must do. It is pure: the unit tests
drive it through every kill point of a simulated run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATE_VERSION = 2
STATE_SUFFIX = ".padless-state.json"


@dataclass(frozen=True)
class Counts:
    rows_in: int = 0
    rows_scored: int = 0
    rows_errored: int = 0


@dataclass(frozen=True, kw_only=True)
class OutputFacts:
    """What is on disk beside the state: the output file, and for Parquet the finished part files."""

    exists: bool
    size: int = 0  # bytes; 0 when the output is missing
    parts: frozenset[int] = frozenset()  # numbers of the part files present in ``<output>.parts/``
    parts_dir: bool = False  # whether ``<output>.parts/`` exists at all


# The four decisions. ``StartFresh``: write a new state, then empty the output (and parts) and run from row 0.
@dataclass(frozen=True)
class StartFresh:
    pass


@dataclass(frozen=True)
class Continue:
    """Cut the output back to ``committed``, skip ``rows_done`` input rows, and carry on with ``columns``."""

    rows_done: int
    committed: int
    counts: Counts
    columns: list[str]


@dataclass(frozen=True)
class AlreadyComplete:
    counts: Counts
    rows_done: int
    remove_parts: bool  # a kill between recording completion and removing the parts left them behind


@dataclass(frozen=True)
class Refuse:
    message: str  # one line for the user; it names the flag that gets them unstuck


Decision = StartFresh | Continue | AlreadyComplete | Refuse


# Formats committed as numbered Parquet part files beside the output, put together at completion.
PART_FORMATS = ("parquet", "npy")
# The Ray Data job's output: a Parquet dataset folder whose parts are named by the rows they hold. Its state sits
# inside the folder; a part is whole once it has its name, so the parts themselves are the commits and the job finds
# what is done by reading their row ids (``rows_done`` and ``committed`` stay 0 until completion).
DATASET_FORMAT = "ray-parquet"


def fingerprint(keyed: dict[str, Any]) -> str:
    """The hash a state records of what a run reads and every option that changes its output."""
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()


def new_state(fingerprint: str, fmt: str, columns: list[str]) -> dict[str, Any]:
    """The state written before the output is touched: nothing committed yet (a dataset's parts commit alone)."""
    return {"version": STATE_VERSION, "fingerprint": fingerprint, "format": fmt, "columns": list(columns),
            "rows_done": 0, "committed": 0 if fmt == DATASET_FORMAT else None, "counts": asdict(Counts()),
            "complete": False, "output_size": None}


def after_commit(state: dict[str, Any], rows_done: int, committed: int, counts: Counts) -> dict[str, Any]:
    """The state once the output up to ``committed`` (covering ``rows_done`` rows) is durable."""
    return {**state, "rows_done": rows_done, "committed": committed, "counts": asdict(counts)}


def completed(state: dict[str, Any], output_size: int) -> dict[str, Any]:
    """The state once the final output (of ``output_size`` bytes) is durable and in place."""
    return {**state, "complete": True, "output_size": output_size}


def decide(state: dict[str, Any] | None, facts: OutputFacts, *, output: str, fmt: str, fingerprint: str | None,
           resume: bool, overwrite: bool, state_file: str | None = None) -> Decision:
    """What a run must do, given the state file (``None`` when absent), the output on disk and the flags.

    A missing state beside an existing output is never taken as complete: only a state that says so, beside an
    output of the recorded size, is. Whatever cannot be proven is refused, naming ``--overwrite``. For
    :data:`DATASET_FORMAT` ``facts`` describe the folder (``exists``: it holds anything; ``size``: its parts' bytes)
    and ``state_file`` names the state inside it; ``Continue`` then leaves finding the finished rows to the job.
    """
    state_file = state_file or output + STATE_SUFFIX
    where = "in it" if fmt == DATASET_FORMAT else "beside it"
    if resume and overwrite:
        return Refuse("pass either --resume or --overwrite, not both")
    if overwrite:
        return StartFresh()
    if not resume:
        if facts.exists or state is not None:
            return Refuse(f"{output} already exists; pass --resume to continue it or --overwrite to replace it")
        return StartFresh()
    if state is None:
        if facts.exists:
            return Refuse(f"{output} exists but has no {Path(state_file).name} {where}, so padless "
                          "cannot tell how much of it is done; pass --overwrite to run it again")
        return StartFresh()
    if not _well_formed(state):
        return Refuse(f"{state_file} is unreadable or from another padless version; "
                      "pass --overwrite to run it again")
    if state["fingerprint"] != fingerprint or state["format"] != fmt:
        return Refuse(f"{output} was started with another input file or other options; "
                      "rerun the original command, or pass --overwrite to start again")
    counts = Counts(**state["counts"])
    if state["complete"]:
        if not facts.exists:
            return Refuse(f"{output} is missing, though its state file records it complete; "
                          "pass --overwrite to run it again")
        if facts.size != state["output_size"]:
            return Refuse(f"{output} has changed since padless completed it ({facts.size} bytes, "
                          f"{state['output_size']} recorded); pass --overwrite to run it again")
        return AlreadyComplete(counts, state["rows_done"], remove_parts=facts.parts_dir)
    committed = state["committed"]
    if fmt == DATASET_FORMAT:
        return Continue(0, 0, counts, list(state["columns"]))
    if committed is None:  # killed before the first commit: nothing in the output can be trusted
        return StartFresh()
    if fmt in PART_FORMATS:
        missing = [n for n in range(committed) if n not in facts.parts]
        if missing:
            return Refuse(f"{output}.parts/ lacks {len(missing)} committed part file(s); "
                          "pass --overwrite to start again")
    elif not facts.exists or facts.size < committed:
        return Refuse(f"{output} is shorter ({facts.size} bytes) than its last commit ({committed} bytes); "
                      "pass --overwrite to start again")
    return Continue(state["rows_done"], committed, counts, list(state["columns"]))


def _well_formed(state: dict[str, Any]) -> bool:
    def is_count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    counts = state.get("counts")
    return (state.get("version") == STATE_VERSION and isinstance(state.get("fingerprint"), str)
            and isinstance(state.get("format"), str) and isinstance(state.get("columns"), list)
            and is_count(state.get("rows_done")) and (state.get("committed") is None or is_count(state["committed"]))
            and isinstance(counts, dict) and set(counts) == set(asdict(Counts()))
            and all(is_count(v) for v in counts.values()) and isinstance(state.get("complete"), bool)
            and (not state["complete"] or is_count(state.get("output_size"))))


def read_state(path: Path) -> dict[str, Any] | None:
    """The state file's content; ``None`` when there is none, ``{}`` when it is not a JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        state = json.loads(text)
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically and durably: a kill leaves either the old state or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(state))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the rename itself is still atomic
        pass
    finally:
        os.close(fd)
