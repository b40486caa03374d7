"""What the Ray Data tests share besides their cluster (``ray_cluster`` in conftest.py): inputs, reads and waits."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before Ray is imported anywhere: nothing may phone home

DELAY = "PADLESS_DUMMY_DELAY_PER_TOKEN_S"
RAY_DATA_MARKS = [
    pytest.mark.ray, pytest.mark.slow,
    # Ray 2.60's DataContext() assigns the defaults of its own deprecated fields (use_push_based_shuffle, use_polars,
    # …) through a __setattr__ that warns, on the first DataContext of every process: Ray's noise, not padless's.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
    # Ray Data's advice when a fixed pool starts before its input arrives (a resumed run's reads filter rows first);
    # a log line for users, an exception under this suite's filterwarnings=error.
    pytest.mark.filterwarnings("ignore:The minimum number of concurrent actors:UserWarning"),
]
WORDS = ["good", "bad", "great", "awful", "fine", "dull", "superb", "boring", "a", "film", "plot", "actors"]


def text_of(i: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(1 + i % 17))


def ray_rows(out: Path) -> list[dict[str, Any]]:
    return pads.dataset(str(out), format="parquet").to_table().sort_by("row_id").to_pylist()


def summary_of(err: str) -> dict[str, Any]:
    lines = [line for line in err.splitlines() if line.startswith('{"summary"')]
    assert len(lines) == 1, err
    return dict(json.loads(lines[0])["summary"])


def write_csv_with_bad_rows(path: Path, start: int, n: int) -> None:
    lines = [b"id,text,note"]
    for i in range(start, start + n):
        if i % 11 == 3:
            lines.append(f"{i},,empty".encode())  # empty text: an empty_input error
        elif i % 11 == 5:
            lines.append(f"{i}".encode())  # fewer fields than the header
        elif i % 11 == 7:
            lines.append(f"{i},caf\xe9 bad bytes,latin1".encode("latin-1"))  # not UTF-8
        elif i % 11 == 9:
            lines.append(f"{i},{text_of(i)},x,extra".encode())  # more fields than the header
        else:
            lines.append(f'{i},"{text_of(i)}",ok'.encode())
    path.write_bytes(b"\n".join(lines) + b"\n")


def slow_input(folder: Path, files: int, rows: int) -> None:
    folder.mkdir()
    for k in range(files):
        texts = [text_of(k * rows + i) for i in range(rows)]
        pq.write_table(pa.table({"text": texts, "k": [k * rows + i for i in range(rows)]}), folder / f"p{k}.parquet")


def wait_for_parts(out: Path, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.is_dir() and len(list(out.glob("part-*.parquet"))) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} parts in {out} after {timeout}s")


def run_losing_a_node(cluster: Any, spec: Any) -> Any:
    """Run the Ray job ``spec`` and remove a worker node once two parts are written; the job's summary, after the
    node is back (for the tests that follow). Asserts that the removal happened mid-run."""
    from padless.ray.offline_job import run_ray_job

    out = Path(spec.output)
    result: dict[str, Any] = {}
    job = threading.Thread(target=lambda: result.update(summary=run_ray_job(spec)), daemon=True)
    job.start()
    # Two of several parts: the rest take seconds, so the node goes while most of the job is still to run (with
    # fewer parts left to wait for, a busy machine once wrote them all while the node was removed).
    wait_for_parts(out, 2)
    cluster.remove_node(list(cluster.worker_nodes)[0])
    parts_at_removal = len(list(out.glob("part-*.parquet")))
    job.join(timeout=240)
    assert not job.is_alive(), "the job did not finish after a worker node was removed"
    cluster.add_node(num_cpus=1)  # back to two worker nodes for the tests after this one
    cluster.wait_for_nodes()
    assert parts_at_removal < len(list(out.glob("part-*.parquet")))  # the removal happened mid-run
    return result["summary"]


def in_input_order(out: Path, src: Path, rows_per_file: int) -> list[dict[str, Any]]:
    """The output's rows by row id, once checked to be every input row exactly once, in input order."""
    rows = ray_rows(out)
    files = sorted(str(p) for p in src.iterdir())
    assert [(r["input_file"], r["row_number"]) for r in rows] == [(f, i) for f in files for i in range(rows_per_file)]
    return rows


def local_reference(src: Path, local: Callable[[Path], list[dict[str, Any]]],
                    monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``local(file)``'s rows for every file of ``src`` in order, run without the dummy backend's delay."""
    monkeypatch.setenv(DELAY, "0")  # the in-process local reference need not be slow
    out: list[dict[str, Any]] = []
    for f in sorted(src.iterdir()):
        out += local(f)
    monkeypatch.delenv(DELAY)
    return out
