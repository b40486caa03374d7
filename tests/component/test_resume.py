"""`padless classify --resume` and `padless embed --resume` after `kill -9` at every kill point: every input row
appears exactly once, in order.

The killed run is a real process that SIGKILLs itself at a named moment (``PADLESS_CRASH_AT``, see padless.faults);
the follow-up runs (the plain re-run that must refuse, then ``--resume``) go through the same CLI in-process, which
keeps the suite to one process start per case. The deterministic dummy backend on the tiny model's tokenizer makes
the resumed output comparable row for row with one uninterrupted reference run per format. ``padless embed`` runs
the same job code with another row task; it is checked on its own formats at a representative subset of the points
(the tiny classifier folder read as an encoder: ``read_info(task="embed")`` takes any encoder folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_support import run_cli

pytestmark = pytest.mark.slow

ROWS = 300
CHUNK = 50
CHUNKS = ROWS // CHUNK
FORMATS = ["jsonl", "csv", "parquet"]
# Kill points common to every format: before anything is on disk, before the first commit, between commits, and
# just after the last commit.
COMMON_POINTS = ["before-model-load", "state-written", "output-opened", "chunk-written:1", "state-updated:2",
                 "committed:3", f"committed:{CHUNKS}"]
FINAL_POINTS = {"jsonl": [f"state-updated:{CHUNKS}"], "csv": [f"state-updated:{CHUNKS}"],
                "parquet": ["merge-started:3", "merged", "completed"]}
CASES = [("classify", fmt, point) for fmt in FORMATS for point in COMMON_POINTS + FINAL_POINTS[fmt]]
EMBED_FORMATS = ["jsonl", "parquet", "npy"]
EMBED_POINTS = ["before-model-load", "state-written", "chunk-written:1", "state-updated:2", f"committed:{CHUNKS}"]
EMBED_FINAL = {"jsonl": [f"state-updated:{CHUNKS}"], "parquet": ["merge-started:3", "merged", "completed"],
               "npy": ["merge-started:3", "merged", "completed"]}
CASES += [("embed", fmt, point) for fmt in EMBED_FORMATS for point in EMBED_POINTS + EMBED_FINAL[fmt]]
# The rows the state file counts as committed after a kill at each point (None: no state file yet).
ROWS_DONE_AT = {"before-model-load": None, "state-written": 0, "output-opened": 0, "chunk-written:1": 0,
                "state-updated:2": 2 * CHUNK, "committed:3": 2 * CHUNK, f"committed:{CHUNKS}": ROWS - CHUNK,
                f"state-updated:{CHUNKS}": ROWS, "merge-started:3": ROWS, "merged": ROWS, "completed": ROWS}


def _args(src: Path, dst: Path, model: Path, *extra: str, task: str = "classify") -> list[str]:
    return [task, str(src), "-o", str(dst), "--model", str(model), "--backend", "dummy",
            "--chunk-rows", str(CHUNK), "--no-progress", *extra]


def _subprocess(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "padless.cli.main", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def _read(path: Path) -> list[str]:
    if path.suffix == ".npy":
        array = np.load(path)
        assert array.dtype == np.float32
        return [json.dumps(row.tolist()) for row in array]
    if path.suffix == ".parquet":
        return [json.dumps(r, sort_keys=True) for r in pq.read_table(path).to_pylist()]
    return path.read_text(encoding="utf-8").splitlines()


def _state(out: Path) -> Path:
    return Path(str(out) + ".padless-state.json")


def _summary(stderr: str) -> dict[str, int]:
    return json.loads(stderr.strip().splitlines()[-1])["summary"]


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("resume-input") / "in.txt"
    path.write_text("".join(f"review {i}: " + "quite good " * (i % 13) + "\n" for i in range(ROWS)))
    return path


@pytest.fixture(scope="module")
def references(src: Path, tiny_model_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], list[str]]:
    """One uninterrupted run per task and format, read back."""
    folder = tmp_path_factory.mktemp("resume-reference")
    out = {}
    for task, formats in (("classify", FORMATS), ("embed", EMBED_FORMATS)):
        for fmt in formats:
            dst = folder / f"reference-{task}.{fmt}"
            done = _subprocess(_args(src, dst, tiny_model_dir, task=task), PADLESS_CACHE=str(folder / "padless-cache"))
            assert done.returncode == 0, done.stderr
            out[task, fmt] = _read(dst)
    assert len(out["classify", "jsonl"]) == ROWS and len(out["classify", "csv"]) == ROWS + 1  # the CSV header
    assert len(out["embed", "jsonl"]) == len(out["embed", "npy"]) == ROWS
    return out


@pytest.mark.parametrize(("task", "fmt", "point"), CASES)
def test_killed_run_resumes_to_the_exact_output(task: str, fmt: str, point: str, src: Path, tiny_model_dir: Path,
                                                references: dict[tuple[str, str], list[str]], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"out.{fmt}"
    killed = _subprocess(_args(src, out, tiny_model_dir, task=task), PADLESS_CRASH_AT=point)
    assert killed.returncode == -9, f"not killed at {point}: rc={killed.returncode} {killed.stderr}"
    left_behind = out.exists() or _state(out).exists()
    assert left_behind == (point != "before-model-load")
    rows_done = json.loads(_state(out).read_text())["rows_done"] if _state(out).exists() else None
    assert rows_done == ROWS_DONE_AT[point]
    if fmt in ("jsonl", "csv") and out.exists():  # a torn write after the last commit, as a kill mid-write can leave
        with open(out, "ab") as fh:
            fh.write(b'{"half a row')

    if left_behind:
        code, _, err = run_cli(_args(src, out, tiny_model_dir, task=task), monkeypatch, capsys)
        assert code == 2 and "--resume" in err and err.startswith("error: "), err

    code, _, err = run_cli(_args(src, out, tiny_model_dir, "--resume", task=task), monkeypatch, capsys)
    assert code == 0, err
    assert ("already complete" in err) == (point == "completed")
    summary = _summary(err)
    assert summary["rows_in"] == ROWS == summary["rows_scored"] + summary["rows_errored"]
    assert summary["rows_skipped_by_resume"] == (rows_done or 0)
    assert _read(out) == references[task, fmt]
    state = json.loads(_state(out).read_text())
    assert state["complete"] is True and state["output_size"] == out.stat().st_size
    assert not Path(str(out) + ".parts").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_completed_run_resumed_is_already_complete(fmt: str, src: Path, tiny_model_dir: Path,
                                                   references: dict[tuple[str, str], list[str]], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"out.{fmt}"
    code, _, err = run_cli(_args(src, out, tiny_model_dir), monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_cli(_args(src, out, tiny_model_dir, "--resume"), monkeypatch, capsys)
    assert code == 0 and f"{out} is already complete; nothing to do" in err
    summary = _summary(err)
    assert (summary["rows_in"], summary["already_complete"]) == (ROWS, True)
    assert summary["rows_in"] == summary["rows_scored"] + summary["rows_errored"]
    assert _read(out) == references["classify", fmt]

    with open(out, "ab") as fh:  # changed since completion: no longer vouched for
        fh.write(b"\n")
    code, _, err = run_cli(_args(src, out, tiny_model_dir, "--resume"), monkeypatch, capsys)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(_args(src, out, tiny_model_dir, "--overwrite"), monkeypatch, capsys)
    assert code == 0 and _read(out) == references["classify", fmt], err


def test_output_without_state_is_refused_not_complete(src: Path, tiny_model_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The reported data loss: an output killed before its first commit (0 bytes, no state) was taken as done."""
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"")
    code, _, err = run_cli(_args(src, out, tiny_model_dir, "--resume"), monkeypatch, capsys)
    assert code == 2 and "--overwrite" in err and "nothing to do" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err


def test_resume_refuses_changed_options(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from padless.commit import Counts, after_commit, new_state

    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("good\nbad\n")
    out.write_text("")
    state = after_commit(new_state("from another run", "jsonl", ["text", "label", "score", "error"]), 1, 0,
                         Counts(1, 1, 0))
    _state(out).write_text(json.dumps(state))
    code, out_text, err = run_cli(_args(src, out, tiny_model_dir, "--resume"), monkeypatch, capsys)
    assert code == 2 and "other options" in err and "--overwrite" in err and "Traceback" not in err + out_text
