"""`padless classify --resume` after `kill -9`: every input row appears exactly once, in input order.

The run uses the deterministic dummy backend (slowed down through PADLESS_DUMMY_DELAY_PER_TOKEN_S) on the tiny
model's tokenizer, so the kill lands mid-run and the resumed output can be compared byte for byte with an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

ROWS = 1500
CHUNK = 50


def _cmd(src: Path, dst: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "padless.cli.main", "classify", str(src), "-o", str(dst), "--model", str(model),
            "--backend", "dummy", "--chunk-rows", str(CHUNK), "--no-progress", *extra]


def _env(delay: float) -> dict[str, str]:
    return {**os.environ, "PADLESS_DUMMY_DELAY_PER_TOKEN_S": str(delay)}


def _read(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return [json.dumps(r, sort_keys=True) for r in pq.read_table(path).to_pylist()]
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_resume_after_kill(fmt: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("".join(f"review {i}: " + "quite good " * (i % 13) + "\n" for i in range(ROWS)))
    reference = tmp_path / f"reference.{fmt}"
    done = subprocess.run(_cmd(src, reference, tiny_model_dir), env=_env(0), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr

    out = tmp_path / f"out.{fmt}"
    state = Path(str(out) + ".padless-state.json")
    proc = subprocess.Popen(_cmd(src, out, tiny_model_dir), env=_env(2e-4), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    rows_done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists():
            try:
                rows_done = json.loads(state.read_text())["rows_done"]
            except (ValueError, KeyError):  # caught between write and rename: read again
                rows_done = 0
            if rows_done >= 5 * CHUNK:
                break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed; raise the dummy delay"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert 0 < rows_done < ROWS
    if fmt != "parquet":  # a torn write after the last commit, as a crash mid-chunk would leave
        with open(out, "ab") as fh:
            fh.write(b'{"half a row')

    refused = subprocess.run(_cmd(src, out, tiny_model_dir), env=_env(0), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = subprocess.run(_cmd(src, out, tiny_model_dir, "--resume"), env=_env(0), capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stderr.strip().splitlines()[-1])["summary"]
    assert summary["rows_skipped_by_resume"] >= rows_done
    assert summary["rows_in"] == ROWS  # counts carried over from the killed run plus the resumed part
    assert _read(out) == _read(reference)
    assert not state.exists()

    again = subprocess.run(_cmd(src, out, tiny_model_dir, "--resume"), env=_env(0), capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "already complete" in again.stderr
    assert _read(out) == _read(reference)


def test_resume_refuses_changed_options(tiny_model_dir: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("good\nbad\n")
    state = Path(str(out) + ".padless-state.json")
    out.write_text("")
    state.write_text(json.dumps({"fingerprint": "from another run", "rows_done": 1, "committed": 0, "summary": {}}))
    res = subprocess.run(_cmd(src, out, tiny_model_dir, "--resume"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "other options" in res.stderr and "Traceback" not in res.stderr
