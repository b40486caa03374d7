"""A SIGTERM to `padless bench serve` (a timeout, a cancelled CI job) ends it with 143 and takes down the padless
server it had started (real processes, the tiny model)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from e2e_support import alive

pytestmark = pytest.mark.slow


def test_sigterm_to_the_cli_stops_its_server(tiny_model_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "bench.log"
    cmd = [sys.executable, "-m", "padless.cli.main", "bench", "--model", str(tiny_model_dir), "-n", "16",
           "--out-dir", str(tmp_path / "out"), "serve", "--backend", "torch", "--duration", "1",
           "--min-requests", "10", "--budget", "120"]
    with open(log, "wb") as out:
        bench = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    servers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 180
        while "padless: finding the highest rate" not in log.read_text(errors="replace"):
            assert bench.poll() is None, f"the benchmark ended early:\n{log.read_text(errors='replace')[-2000:]}"
            assert time.monotonic() < deadline, "the padless server never came up"
            time.sleep(0.2)
        servers = psutil.Process(bench.pid).children(recursive=True)
        assert servers, "no server process under the benchmark"
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=90) == 128 + signal.SIGTERM
        end = time.monotonic() + 10
        while alive(servers) and time.monotonic() < end:
            time.sleep(0.1)
        assert not alive(servers), "the server outlived the SIGTERMed benchmark"
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for process in alive(servers):
            process.kill()
