"""Output writers that commit whole chunks, so a killed run can be resumed exactly.

Text formats (JSONL, CSV, TSV) append to the output file; after each chunk they flush, fsync and report the byte
offset reached. Parquet cannot be appended to, so each chunk becomes a part file in ``<output>.parts/``; ``finish``
streams the parts, in order, into the final file. Stdout is written the same way but cannot be resumed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from padless.fileio import clean


def _jsonable(value: Any) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)  # dates, decimals and bytes from Parquet inputs


class Sink:
    """Base writer. ``write`` appends one chunk of records; ``commit`` returns the resume position."""

    def __init__(self, path: str, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = list(columns)

    def open(self, resume_at: int | None) -> None:
        raise NotImplementedError

    def write(self, records: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def commit(self) -> int:
        raise NotImplementedError

    def finish(self) -> None:
        pass


class TextSink(Sink):
    """JSONL, CSV or TSV, to a file (resumable) or stdout."""

    def __init__(self, path: str, columns: Sequence[str], fmt: str) -> None:
        super().__init__(path, columns)
        self.fmt = fmt
        self.fh: IO[bytes] | None = None

    def open(self, resume_at: int | None) -> None:
        if self.path == "-":
            self.fh = sys.stdout.buffer
        elif resume_at is None:
            self.fh = open(self.path, "wb")
        else:
            self.fh = open(self.path, "r+b")
            self.fh.truncate(resume_at)  # drop whatever a killed run wrote after its last commit
            self.fh.seek(resume_at)
        if resume_at is None and self.fmt != "jsonl":
            self._csv_rows([self.columns])

    def _csv_rows(self, rows: list[list[Any]]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter="\t" if self.fmt == "tsv" else ",", lineterminator="\n").writerows(rows)
        assert self.fh is not None
        self.fh.write(buffer.getvalue().encode("utf-8"))

    def write(self, records: list[dict[str, Any]]) -> None:
        assert self.fh is not None
        if self.fmt == "jsonl":
            lines = [json.dumps(_jsonable(r), ensure_ascii=False) + "\n" for r in records]
            self.fh.write("".join(lines).encode("utf-8"))
            return
        rows = []
        for record in records:
            row = []
            for name in self.columns:
                value = record.get(name)
                if isinstance(value, (list, dict)):
                    value = json.dumps(_jsonable(value), ensure_ascii=False)
                row.append("" if value is None else clean(value) if isinstance(value, str) else value)
            rows.append(row)
        self._csv_rows(rows)

    def commit(self) -> int:
        assert self.fh is not None
        self.fh.flush()
        if self.path == "-":
            return 0
        os.fsync(self.fh.fileno())
        return self.fh.tell()

    def finish(self) -> None:
        if self.fh is not None and self.path != "-":
            self.fh.close()


class ParquetSink(Sink):
    """Parquet via numbered part files, concatenated at the end."""

    def __init__(self, path: str, columns: Sequence[str]) -> None:
        super().__init__(path, columns)
        self.parts_dir = Path(path + ".parts")
        self.parts = 0

    def open(self, resume_at: int | None) -> None:
        if resume_at is None:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            self.parts = 0
        else:
            self.parts = resume_at
            for stray in self.parts_dir.glob("part-*.parquet"):  # a part written after the last commit
                if int(stray.stem.split("-")[1]) >= resume_at:
                    stray.unlink()
        self.parts_dir.mkdir(parents=True, exist_ok=True)

    def write(self, records: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{k: _jsonable(r.get(k)) for k in self.columns} for r in records])
        tmp = self.parts_dir / f"part-{self.parts:06d}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.parts_dir / f"part-{self.parts:06d}.parquet")
        self.parts += 1

    def commit(self) -> int:
        return self.parts

    def finish(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = sorted(self.parts_dir.glob("part-*.parquet"))
        tables: Iterator[Any] = (pq.read_table(p) for p in parts)
        # Column types can differ between parts (a column that was all null in one chunk): unify the schemas,
        # then cast while streaming so memory holds one part at a time.
        schemas = [pq.read_schema(p) for p in parts]
        if not schemas:  # no input rows: still write a valid, empty file with the expected columns
            schemas = [pa.schema([(c, pa.string()) for c in self.columns])]
            tables = iter([schemas[0].empty_table()])
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        tmp = self.path + ".tmp"
        with pq.ParquetWriter(tmp, schema) as writer:
            for table in tables:
                writer.write_table(table.cast(schema) if table.schema != schema else table)
        os.replace(tmp, self.path)
        shutil.rmtree(self.parts_dir, ignore_errors=True)


def make_sink(path: str, fmt: str, columns: Sequence[str]) -> Sink:
    if fmt == "parquet":
        return ParquetSink(path, columns)
    return TextSink(path, columns, fmt)
