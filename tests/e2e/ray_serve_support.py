"""Helpers for the ``padless serve --ray`` end-to-end tests: start the real CLI in a process group of its own (its
local Ray cluster's processes are its children), stop it, clean up everything it started, find a replica's process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
from e2e_support import HOST, Server, free_port

RAY_START_TIMEOUT_S = 240.0  # Ray, Serve's controller and proxy, and every replica importing padless, on 2 cores


def start_ray_server(model_dir: Path, log_dir: Path, *args: str, backend: str = "dummy",
                     delay_per_token_s: float = 0.0) -> Server:
    """``padless serve --ray`` on a free port, ready (every tier answered /ready) when this returns."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "padless.cli.main", "serve", "--ray", "--model", str(model_dir), "--backend", backend,
           "--host", HOST, "--port", str(port), "--log-level", "warning", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADLESS_", "RAY_"))}
    env.update({"PADLESS_DUMMY_DELAY_PER_TOKEN_S": str(delay_per_token_s), "PYTHONUNBUFFERED": "1",
                "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
                "PADLESS_CACHE": str(log_dir / "padless-cache")})
    stdout = open(log_dir / "stdout.log", "wb")
    stderr = open(log_dir / "stderr.log", "wb")
    # A session of its own: SIGTERM reaches the padless process alone (as `kill PID`, docker and Kubernetes send
    # it), and the cleanup can still reach every process it started.
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    server = Server(proc=proc, port=port, log_dir=log_dir, _files=[stdout, stderr])
    try:
        server.wait_ready(timeout=RAY_START_TIMEOUT_S)
    except BaseException:
        stop_ray_server(server, timeout=10)
        raise
    return server


def stop_ray_server(server: Server, timeout: float = 60.0) -> int:
    """SIGTERM (drain and shut down), then kill whatever of its process group is left. Returns the exit code."""
    descendants = _descendants(server.proc.pid)
    code = server.stop(timeout=timeout)
    try:
        os.killpg(server.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for proc in descendants:  # Ray's workers put themselves in groups of their own
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return code


def replica_processes(server: Server, deployment: str) -> list[psutil.Process]:
    """The live processes of ``deployment``'s replicas in this server's own Ray cluster (never another's)."""
    out = []
    for proc in _descendants(server.proc.pid):
        try:
            title = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if f"ServeReplica:padless:{deployment}" in title and proc.is_running():
            out.append(proc)
    return out


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
