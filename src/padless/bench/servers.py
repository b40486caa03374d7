"""The server processes a serving benchmark measures: started on a free loopback port, waited for until ready, and
stopped, whatever stops the benchmark (``padless bench serve`` and ``padless bench ray``)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], path: str, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f}s")


def start_server(cmd: list[str], url: str, ready_path: str, log: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` (its output to ``log``) and return once ``url + ready_path`` answers 200; a server that exits
    or is not ready within 180 s is stopped and raises :class:`RuntimeError`."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        _wait_ready(url, proc, ready_path)
    except BaseException:
        # Not ready, or the benchmark itself stopped (SystemExit on SIGTERM): the caller has no handle to stop it.
        stop_server(proc)
        raise
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, 40 s to shut down gracefully, then SIGKILL; nothing for a server that has already exited."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
