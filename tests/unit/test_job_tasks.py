"""The job's row tasks: classify keeps its records, columns and resume fingerprint; embed adds a float32 vector per
row (null with an error where a row cannot be embedded), written as a fixed-size float32 list in Parquet and a list
of floats in JSONL, every row exactly once and in order — against a fake embedder, no model."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from padless.errors import EmptyInputError, InputError
from padless.job import ClassifyTask, EmbedTask, JobSpec, _fingerprint, run_job
from padless.sinks import make_sink

DIM = 4


@dataclass
class Stats:
    rows: int = 0
    errors: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    padding_fraction: float = 0.0
    windows: int = 0


class FakeEmbedder:
    """Embeds a text as [len, 1, 2, 3] (float32); an empty text is an ItemError, as a real embedder reports it."""

    dimension = DIM

    def __init__(self) -> None:
        self.stats = Stats()
        self.calls: list[list[Any]] = []

    def run(self, texts: list[Any]) -> list[Any]:
        self.calls.append(list(texts))
        self.stats.rows += len(texts)
        return [EmptyInputError("empty input") if not t else
                np.array([len(t), 1, 2, 3], dtype=np.float32) for t in texts]

    def describe(self) -> dict[str, Any]:
        return {"path": "/fake", "pooling": "mean", "normalize": True, "dimensions": None, "long": "truncate"}


class FakeClassifier:
    stats = Stats()

    def describe(self) -> dict[str, Any]:
        return {"path": "/m", "max_length": 128, "truncate": True, "pair_truncation": "longest_first",
                "backend": "torch", "dtype": "float32", "labels": ["a", "b"], "max_batch_tokens": 99}


def _spec(src: Path, out: Path, fmt: str, **kw: Any) -> JobSpec:
    return JobSpec(input=str(src), input_format="csv", column="text", output=str(out), output_format=fmt,
                   chunk_rows=kw.pop("chunk_rows", 2), **kw)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "in.csv"
    path.write_text("id,text\n1,hello\n2,\n3,a longer text\n4,x\n5,yes\n")
    return path


def test_classify_fingerprint_hashes_what_it_hashed_before_tasks(src: Path, tmp_path: Path) -> None:
    """An output started before the job took row tasks must still resume: the same keys, the same hash."""
    spec = _spec(src, tmp_path / "o.jsonl", "jsonl", top_k=2, raw_scores=True, output_prefix="p_")
    desc = FakeClassifier().describe()
    stat = os.stat(spec.input)
    before = {
        "input": os.path.abspath(spec.input), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "column": spec.column, "top_k": spec.top_k, "raw_scores": spec.raw_scores, "format": spec.output_format,
        "prefix": spec.output_prefix, "pair_column": spec.pair_column,
        "model": {k: desc.get(k) for k in ("path", "max_length", "truncate", "pair_truncation", "backend", "dtype")},
    }
    expected = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()
    task = ClassifyTask(FakeClassifier(), top_k=2, raw_scores=True, output_prefix="p_")
    assert _fingerprint(spec, task) == expected


def test_embed_fingerprint_differs_from_classify_and_follows_embed_options(src: Path, tmp_path: Path) -> None:
    spec = _spec(src, tmp_path / "o.jsonl", "jsonl")
    embed = _fingerprint(spec, EmbedTask(FakeEmbedder()))
    assert embed != _fingerprint(spec, ClassifyTask(FakeClassifier()))
    other = FakeEmbedder()
    other.describe = lambda: {**FakeEmbedder().describe(), "normalize": False}  # type: ignore[method-assign]
    assert _fingerprint(spec, EmbedTask(other)) != embed


def test_embed_columns_and_prefix_and_clash() -> None:
    task = EmbedTask(FakeEmbedder(), output_prefix="e_")
    assert task.columns(["id", "text"])[0] == ["id", "text", "e_embedding", "e_error"]
    assert task.vector_columns == {"e_embedding": DIM}
    with pytest.raises(InputError, match="--output-prefix"):
        EmbedTask(FakeEmbedder()).columns(["text", "embedding"])


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_embed_job_every_row_once_in_order_with_errors(fmt: str, src: Path, tmp_path: Path) -> None:
    out = tmp_path / f"out.{fmt}"
    embedder = FakeEmbedder()
    summary = run_job(_spec(src, out, fmt), EmbedTask(embedder))
    assert (summary.rows_in, summary.rows_scored, summary.rows_errored) == (5, 4, 1)
    if fmt == "parquet":
        table = pq.read_table(out)
        assert table.schema.field("embedding").type == pa.list_(pa.float32(), DIM)
        assert table.column_names == ["id", "text", "embedding", "error"]
        rows = table.to_pylist()
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [str(r["id"]) for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[1]["embedding"] is None and rows[1]["error"].startswith("empty_input: ")
    assert rows[2]["embedding"] == [13.0, 1.0, 2.0, 3.0] and rows[2]["error"] is None
    assert json.loads(Path(str(out) + ".padless-state.json").read_text())["complete"] is True


def test_parquet_empty_input_keeps_the_vector_type(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text\n")
    out = tmp_path / "out.parquet"
    run_job(_spec(src, out, "parquet"), EmbedTask(FakeEmbedder()))
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.schema.field("embedding").type == pa.list_(pa.float32(), DIM)


def test_vector_columns_refused_in_csv(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="csv"):
        make_sink(str(tmp_path / "o.csv"), "csv", ["text", "embedding"], vector_columns={"embedding": 3})
