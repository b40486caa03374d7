"""``padless tune`` as a user runs it: a real process with a one-minute budget on a MiniLM classifier, its offline
search in-process and its serving search against real ``padless serve`` processes it starts and stops."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from padless import tuned

pytestmark = pytest.mark.slow
BUDGET_S = 60


def test_one_minute_tune_of_a_minilm_classifier(trained_minilm_dir: Path, tmp_path: Path) -> None:
    from padless.loader.export import ensure_onnx

    model = Path(shutil.copytree(trained_minilm_dir, tmp_path / "model"))
    ensure_onnx(str(model))  # the export is the model's one-off cost, not the tuner's: made before the clock starts
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "padless.cli.main", "tune", str(model), "--backend", "onnx",
                           "--minutes", str(BUDGET_S / 60)], capture_output=True, text=True, timeout=BUDGET_S * 3)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Inside the budget, give or take the interpreter start and the model's first load (before the clock starts).
    assert elapsed < BUDGET_S + 25, elapsed
    path = model / tuned.TUNED_NAME
    document = tuned.read(path)
    offline = document["offline"]
    assert offline["resolved_backend"] == "onnx" and offline["trials"]
    assert offline["comparison"]["ratio"] >= 1.0
    assert {"max_batch_tokens", "max_batch_size", "threads"} == set(offline["settings"])
    [bound] = document["serving_by_p99"]
    assert bound["p99_ms"] == 200 and bound["resolved_backend"] == "onnx"
    assert bound["alone_p99_ms"] is not None and 0 < bound["alone_p99_ms"] < 200
    if bound.get("defaults_capacity_rps"):  # the serving search had time to find the defaults' capacity
        assert document["serving"]["settings"]["max_wait_ms"] >= 0
    assert "GPU step skipped" in proc.stderr
    assert "every point tried" in proc.stdout and f"wrote {path}" in proc.stdout
    assert path.with_suffix(".png").stat().st_size > 0 and path.with_suffix(".md").stat().st_size > 0
    # Every server it started is gone.
    assert not [p for p in psutil.process_iter(["cmdline"])
                if str(model) in " ".join(p.info["cmdline"] or []) and "serve" in (p.info["cmdline"] or [])]
