"""`padless bench serve` stops every server it started, whenever it is stopped: at each of its steps, in-process
(servers stood in by `sleep` processes, load steps faked). A real SIGTERM to the CLI: tests/e2e."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from padless.bench import serve as serve_bench

pytestmark = pytest.mark.slow

# The run's steps in order: (which server, which step, its position among that kind of call).
MOMENTS = {
    "padless capacity search": ("find_capacity", 1),
    "padless saturation run": ("run_load", 1),
    "baseline capacity search (padless still up)": ("find_capacity", 2),
    "common-rate run (both up)": ("run_load", 4),  # after padless's saturation, 1 req/s and half-capacity runs
}


def _report() -> dict[str, Any]:
    return {"offered_rate": 1.0, "throughput_rps": 1.0, "throughput_texts_per_s": 1.0,
            "latency_ms": {"p50": 1.0, "p99": 2.0, "max": 3.0}, "outcomes": {"ok": 1}, "server": None}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_every_started_server_is_stopped_when_the_run_stops(tiny_model_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, moment: str) -> None:
    kind, position = MOMENTS[moment]
    started: list[subprocess.Popen[bytes]] = []
    calls = {"find_capacity": 0, "run_load": 0}

    def fake_start(cmd: list[str], url: str, ready_path: str, log: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["sleep", "300"])
        started.append(proc)
        return proc

    def stop_here(name: str) -> None:
        calls[name] += 1
        if (name, calls[name]) == (kind, position):
            raise SystemExit(128 + signal.SIGTERM)  # what the CLI's SIGTERM handler raises

    async def fake_capacity(url: str, **kwargs: Any) -> dict[str, Any]:
        stop_here("find_capacity")
        return {"rate": 10.0, "trials": [], "report": _report()}

    async def fake_load(url: str, **kwargs: Any) -> dict[str, Any]:
        stop_here("run_load")
        return _report()

    monkeypatch.setattr(serve_bench, "start_server", fake_start)
    monkeypatch.setattr(serve_bench, "find_capacity", fake_capacity)
    monkeypatch.setattr(serve_bench, "run_load", fake_load)
    try:
        with pytest.raises(SystemExit):
            serve_bench.run_serve_bench(str(tiny_model_dir), n=8, out_dir=tmp_path, backends=["torch"])
        expected = 1 if moment.startswith("padless") else 2
        assert len(started) == expected
        assert all(proc.poll() is not None for proc in started), "a server outlived the stopped benchmark"
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
