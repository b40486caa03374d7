"""``padless tune`` on the tiny model (offline phase): the settings file is written with every point tried, its
report and chart beside it, inside the budget; classify then reads it back. Reading, overriding and refusing a file
are tested face by face in test_tuned_faces.py."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from cli_support import run_cli
from test_classify_cli import write_input

from padless import tuned


@pytest.fixture
def model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_tune_writes_settings_that_classify_reads(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code, out, err = run_cli(["tune", str(model), "--p99-ms", "none", "--minutes", "0.4", "--repeats", "2"],
                             monkeypatch, capsys)
    elapsed = time.monotonic() - started
    assert code == 0, err
    assert elapsed < 0.4 * 60 + 10, elapsed  # the budget, plus loading the model once
    path = model / tuned.TUNED_NAME  # beside the model by default
    document = tuned.read(path)
    assert document["machine"] == tuned.fingerprint()
    offline = document["offline"]
    assert offline["resolved_backend"] == "torch" and offline["workload"] == "realistic"
    assert set(offline["settings"]) == {"max_batch_tokens", "max_batch_size", "threads"}
    assert offline["trials"], "no point was tried"
    for trial in offline["trials"]:
        assert len(trial) and trial["figure"] > 0 and trial["best_figure"] > 0
        assert trial["point"] != trial["against"]
    comparison = offline["comparison"]
    assert len(comparison["samples"]["defaults"]) == len(comparison["samples"]["chosen"]) == 2
    assert comparison["ratio"] >= 1.0  # a choice that loses to the defaults head to head is not written
    assert "serving" not in document and document["serving_by_p99"] == []
    assert path.with_suffix(".md").read_text().startswith(f"# padless tune: {model}")
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "GPU step skipped" in err or document["gpu"] is not None
    assert "every point tried" in out

    src = tmp_path / "in.csv"
    write_input(src, "csv")
    code, _, err = run_cli(["classify", str(src), "-o", str(tmp_path / "out.jsonl"), "--model", str(model),
                            "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    settings = ", ".join(f"{k}={v:g}" for k, v in offline["settings"].items())
    assert err.splitlines()[0] == f"using tuned settings from {path} (offline, measured {document['date']}): {settings}"
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])["label"]


def test_tune_refuses_impossible_options_before_measuring(model: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    for args, message in ((["--no-offline", "--p99-ms", "none"], "nothing to tune"),
                          (["--minutes", "0"], "--minutes must be positive"),
                          (["--p99-ms", "fast"], "--p99-ms takes comma-separated"),
                          (["--repeats", "1"], "--repeats must be at least 2")):
        code, _, err = run_cli(["tune", str(model), *args], monkeypatch, capsys)
        assert code == 2 and message in err, (args, err)
    assert not (model / tuned.TUNED_NAME).exists()


def test_ctrl_c_keeps_the_best_so_far(model: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C during the search (here: at the third point tried) still writes what was found, and exits 130."""
    from padless.tune import search

    challenges = 0
    original = search.CoordinateSearch._challenge

    def interrupting(self: search.CoordinateSearch, candidate: search.Point) -> search.Outcome | None:
        nonlocal challenges
        challenges += 1
        if challenges == 3:
            raise KeyboardInterrupt
        return original(self, candidate)

    monkeypatch.setattr(search.CoordinateSearch, "_challenge", interrupting)
    code, _, err = run_cli(["tune", str(model), "--p99-ms", "none", "--minutes", "2", "--repeats", "2"],
                           monkeypatch, capsys)
    assert code == 130, err
    assert "stopped by Ctrl-C: kept the best settings found so far" in err
    document = tuned.read(model / tuned.TUNED_NAME)
    assert document["interrupted"] is True and len(document["offline"]["trials"]) == 2


@pytest.mark.slow
def test_openvino_searches_streams_and_writes_them(model: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """On OpenVINO the thread layout includes streams (never more than threads), and the file records them."""
    pytest.importorskip("openvino")
    code, _, err = run_cli(["tune", str(model), "--backend", "openvino", "--p99-ms", "none", "--minutes", "0.5",
                            "--repeats", "2"], monkeypatch, capsys)
    assert code == 0, err
    offline = tuned.read(model / tuned.TUNED_NAME)["offline"]
    assert offline["resolved_backend"] == "openvino"
    assert set(offline["settings"]) == {"max_batch_tokens", "max_batch_size", "threads", "streams"}
    assert offline["dimensions"]["streams"] == list(range(1, offline["dimensions"]["threads"][-1] + 1))
    assert offline["settings"]["streams"] <= offline["settings"]["threads"]
