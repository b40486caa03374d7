"""Helpers for the end-to-end tests: start a real ``padless serve`` process, read its metrics.

Every server is started with ``[sys.executable, "-m", "padless.cli.main", "serve", ...]`` and its stdout/stderr
go to files (never pipes, so a chatty server can not block on a full pipe). Start-up is a bounded poll of
``/health`` then ``/ready``; every server is terminated (SIGTERM, then SIGKILL if it does not exit) by a fixture
finalizer. All traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

HOST = "127.0.0.1"
START_TIMEOUT_S = 90.0  # import torch/transformers + tokenizer + warm-up on a busy 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One running ``padless serve`` process."""

    proc: subprocess.Popen[bytes]
    port: int
    log_dir: Path
    api_key: str | None = None
    _files: list[Any] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.url, headers=self.auth, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", 30.0)
        return httpx.AsyncClient(base_url=self.url, headers=self.auth, **kwargs)

    def logs(self) -> str:
        out = []
        for name in ("stdout.log", "stderr.log"):
            path = self.log_dir / name
            if path.exists():
                out.append(path.read_text(encoding="utf-8", errors="replace"))
        return "\n".join(out)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with self.client() as c:
            r = c.get("/metrics")
        assert r.status_code == 200, r.text
        return parse_metrics(r.text)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        end = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5.0) as c:
            for path, headers in (("/health", {}), ("/ready", self.auth)):
                while True:
                    if self.proc.poll() is not None:
                        raise AssertionError(f"server exited with {self.proc.returncode} while starting:\n"
                                             f"{self.logs()[-4000:]}")
                    if time.monotonic() > end:
                        raise AssertionError(f"server not answering {path} after {timeout}s:\n{self.logs()[-4000:]}")
                    try:
                        if c.get(path, headers=headers).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait (bounded), SIGKILL if needed; close the log files. Returns the exit code."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=30)
            return int(self.proc.returncode)
        finally:
            for fh in self._files:
                fh.close()
            self._files.clear()


def start_server(model_dir: Path, log_dir: Path, *args: str, delay_per_token_s: float = 0.0,
                 backend: str = "dummy", api_key: str | None = None, env: dict[str, str] | None = None,
                 wait: bool = True) -> Server:
    """Start ``padless serve`` on a free port (``args`` are extra CLI options) and wait until it is ready."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "padless.cli.main", "serve", "--model", str(model_dir), "--backend", backend,
           "--host", HOST, "--port", str(port), *args]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PADLESS_")}
    full_env.update({"PADLESS_DUMMY_DELAY_PER_TOKEN_S": str(delay_per_token_s), "PYTHONUNBUFFERED": "1",
                     "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                     "PADLESS_CACHE": str(log_dir / "padless-cache")})
    full_env.update(env or {})
    stdout = open(log_dir / "stdout.log", "wb")
    stderr = open(log_dir / "stderr.log", "wb")
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=full_env)
    server = Server(proc=proc, port=port, log_dir=log_dir, api_key=api_key, _files=[stdout, stderr])
    if wait:
        try:
            server.wait_ready()
        except BaseException:
            server.stop(timeout=5)
            raise
    return server


# -- metrics --------------------------------------------------------------------------------------------------------

MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def parse_metrics(text: str) -> dict[MetricKey, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[MetricKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def metric(values: dict[MetricKey, float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (0 when there is none)."""
    want = set(labels.items())
    return sum(v for (n, lab), v in values.items() if n == name and want <= set(lab))


def softmax(x: Any) -> Any:
    import numpy as np

    e = np.exp(x - x.max())
    return e / e.sum()


async def ametrics(client: Any) -> dict[MetricKey, float]:
    """/metrics through an httpx.AsyncClient, parsed."""
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    return parse_metrics(r.text)


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running (a zombie, exited but not yet reaped, counts as gone)."""
    left = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.NoSuchProcess:
            pass
    return left
