"""`padless bench ray`'s offline half on the tiny model: three real jobs (local, --ray, Ray's own pipeline recipe)
run to completion, and the Ray run's answers are checked against the local run's, row by row."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from padless.bench.ray import run_offline

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_offline_ray_bench_runs_all_three_and_checks_answers(tiny_model_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_offline(str(tiny_model_dir), str(tiny_model_dir), "torch", rows=120, workers=2, seed=0,
                         out=tmp_path, say=lines.append)
    runs = result["runs"]
    assert set(runs) == {"padless-local", "padless-ray", "ray-pipeline-b32"}
    assert runs["padless-ray"]["summary"]["rows_in"] == 120 == runs["padless-local"]["summary"]["rows_in"]
    assert runs["ray-pipeline-b32"]["summary"]["rows"] == 120
    for entry in runs.values():
        assert entry["rows_per_s"] == pytest.approx(120 / entry["seconds"])
    check = result["check"]
    # the same model on the same rows: every label equal, scores within float noise, every row once
    assert check == {**check, "rows_local": 120, "rows_ray": 120, "same_row_count": True, "label_agreement": 1.0,
                     "unique_ids": True}
    assert check["max_abs_score_diff"] < 1e-5
    assert result["ratios"]["ray_vs_local"] == pytest.approx(
        runs["padless-ray"]["rows_per_s"] / runs["padless-local"]["rows_per_s"])
    # the baseline really scored the rows with the pipeline: its labels are the model's own labels
    labels = set(pq.read_table(tmp_path / "baseline-scored").column("label").to_pylist())
    assert labels <= set(json.loads((tiny_model_dir / "config.json").read_text())["id2label"].values())
    assert len(lines) == 4
