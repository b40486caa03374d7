"""Output writers that commit whole chunks, so a killed run can be resumed exactly.

Text formats (JSONL, CSV, TSV) append to the output file; after each chunk they flush, fsync and report the byte
offset reached. Parquet cannot be appended to, so each chunk becomes a part file in ``<output>.parts/``; ``finish``
streams the parts, in order, into a temporary file that is fsynced and renamed over the output, and ``cleanup``
removes the parts once the job has recorded completion. Stdout is written the same way but cannot be resumed.

Vector columns (``padless embed``'s ``embedding``) are written as a JSON list of floats in JSONL, and as a
fixed-size float32 list (``fixed_size_list<float32>[dim]``) in Parquet; CSV and TSV do not take them. A ``.npy``
output (one vector column) commits Parquet parts as a Parquet output does; ``finish`` streams their vectors into a
float32 ``rows × dim`` array (NaN rows where a row has none), written to a temporary file and renamed into place.
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

from padless.commit import fsync_dir
from padless.faults import crash_point
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
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # a NumPy vector (an embedding) or scalar
        return value.tolist()
    return str(value)  # dates, decimals and bytes from Parquet inputs


class Sink:
    """Base writer. ``open(None)`` starts an empty output, ``open(position)`` cuts one back to a commit; ``write``
    appends one chunk of records; ``commit`` makes them durable and returns the resume position; ``finish`` puts
    the complete output durably in place; ``cleanup`` removes what only a resume needed."""

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

    def cleanup(self) -> None:
        pass


class TextSink(Sink):
    """JSONL, CSV or TSV, to a file (resumable) or stdout."""

    def __init__(self, path: str, columns: Sequence[str], fmt: str) -> None:
        super().__init__(path, columns)
        self.fmt = fmt
        self.fh: IO[bytes] | None = None
        self.dir_synced = False

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
        if not self.dir_synced:  # the new file's name must be as durable as the state that counts its bytes
            fsync_dir(Path(self.path).parent)
            self.dir_synced = True
        return self.fh.tell()

    def finish(self) -> None:
        if self.fh is None:
            return
        self.commit()  # a CSV header with no rows after it is not committed yet
        if self.path != "-":
            self.fh.close()


class ParquetSink(Sink):
    """Parquet via numbered part files, concatenated at the end. ``vector_columns`` (name → width) are written as
    fixed-size float32 lists, null where a row has none."""

    def __init__(self, path: str, columns: Sequence[str], vector_columns: dict[str, int] | None = None) -> None:
        super().__init__(path, columns)
        self.vector_columns = dict(vector_columns or {})
        self.parts_dir = parts_dir(path)
        self.merge_tmp = Path(path + ".tmp")
        self.parts = 0

    def open(self, resume_at: int | None) -> None:
        if resume_at is None:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            self.merge_tmp.unlink(missing_ok=True)
            Path(self.path).unlink(missing_ok=True)  # an old output must not pass for this run's
            self.parts = 0
        else:
            self.parts = resume_at
            for stray in self.parts_dir.glob("part-*"):  # parts written after the last commit, and torn ones
                if stray.suffix != ".parquet" or _part_number(stray) >= resume_at:
                    stray.unlink()
        self.parts_dir.mkdir(parents=True, exist_ok=True)

    def write(self, records: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        plain = [k for k in self.columns if k not in self.vector_columns]
        table = pa.Table.from_pylist([{k: _jsonable(r.get(k)) for k in plain} for r in records])
        if self.vector_columns:
            arrays = {k: table.column(k) for k in plain} if records else {k: pa.nulls(0) for k in plain}
            for name, width in self.vector_columns.items():
                arrays[name] = vector_array([r.get(name) for r in records], width)
            table = pa.table({k: arrays[k] for k in self.columns})
        tmp = self.parts_dir / f"part-{self.parts:06d}.parquet.tmp"
        pq.write_table(table, tmp)
        _fsync_file(tmp)
        os.replace(tmp, self.parts_dir / f"part-{self.parts:06d}.parquet")
        self.parts += 1

    def commit(self) -> int:
        fsync_dir(self.parts_dir)  # the part's name is durable before the state counts it
        return self.parts

    def finish(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = [self.parts_dir / f"part-{n:06d}.parquet" for n in range(self.parts)]
        tables: Iterator[Any] = (pq.read_table(p) for p in parts)
        # Column types can differ between parts (a column that was all null in one chunk): unify the schemas,
        # then cast while streaming so memory holds one part at a time.
        schemas = [pq.read_schema(p) for p in parts]
        if not schemas:  # no input rows: still write a valid, empty file with the expected columns
            schemas = [pa.schema([(c, pa.list_(pa.float32(), self.vector_columns[c]) if c in self.vector_columns
                                   else pa.string()) for c in self.columns])]
            tables = iter([schemas[0].empty_table()])
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        with pq.ParquetWriter(self.merge_tmp, schema) as writer:
            for table in tables:
                writer.write_table(table.cast(schema) if table.schema != schema else table)
                crash_point("merge-started")
        _fsync_file(self.merge_tmp)
        os.replace(self.merge_tmp, self.path)
        fsync_dir(Path(self.path).parent)
        crash_point("merged")

    def cleanup(self) -> None:
        remove_parts(self.path)


class NpySink(ParquetSink):
    """A ``rows × dim`` float32 ``.npy`` array of the one vector column, in input order; NaN rows for rows without
    a vector. Committed as Parquet parts (all columns, so errors are kept until completion), put together at the end."""

    def __init__(self, path: str, columns: Sequence[str], vector_columns: dict[str, int] | None = None) -> None:
        super().__init__(path, columns, vector_columns)
        if len(self.vector_columns) != 1:
            raise ValueError("a .npy output holds exactly one vector column")
        (self.vector_name, self.width), = self.vector_columns.items()

    def finish(self) -> None:
        import numpy as np
        import pyarrow.parquet as pq

        parts = [self.parts_dir / f"part-{n:06d}.parquet" for n in range(self.parts)]
        rows = sum(pq.read_metadata(p).num_rows for p in parts)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                  "shape": (rows, self.width)}
        # Written block by block rather than through a memory map, whose dirty pages would count in the process's
        # resident memory until the end: peak memory stays one part's vectors whatever the row count.
        with open(self.merge_tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            for part in parts:
                column = pq.read_table(part, columns=[self.vector_name]).column(self.vector_name).combine_chunks()
                block = np.full((len(column), self.width), np.nan, dtype=np.float32)
                if len(column):
                    valid = ~column.is_null().to_numpy(zero_copy_only=False)
                    # flatten() keeps the valid rows' values only, in order
                    block[valid] = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, self.width)
                fh.write(block.tobytes())
                crash_point("merge-started")
        _fsync_file(self.merge_tmp)
        os.replace(self.merge_tmp, self.path)
        fsync_dir(Path(self.path).parent)
        crash_point("merged")


def vector_array(values: list[Any], width: int) -> Any:
    """A ``fixed_size_list<float32>[width]`` array of ``values`` (vectors, or None for a row without one)."""
    import numpy as np
    import pyarrow as pa

    flat = np.zeros((len(values), width), dtype=np.float32)
    missing = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        if value is None:
            missing[i] = True
        else:
            flat[i] = np.asarray(value, dtype=np.float32).reshape(width)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), width,
                                             mask=pa.array(missing) if missing.any() else None)


def parts_dir(path: str) -> Path:
    """Where a Parquet output keeps its committed chunks until it is complete."""
    return Path(path + ".parts")


def finished_parts(path: str) -> frozenset[int]:
    """The numbers of the whole part files beside a Parquet output (torn ``.tmp`` parts are not counted)."""
    return frozenset(_part_number(p) for p in parts_dir(path).glob("part-*.parquet"))


def remove_parts(path: str) -> None:
    shutil.rmtree(parts_dir(path), ignore_errors=True)


def _part_number(part: Path) -> int:
    return int(part.name.split(".")[0].split("-")[1])


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def make_sink(path: str, fmt: str, columns: Sequence[str], *, vector_columns: dict[str, int] | None = None) -> Sink:
    if fmt == "parquet":
        return ParquetSink(path, columns, vector_columns)
    if fmt == "npy":
        return NpySink(path, columns, vector_columns)
    if vector_columns and fmt not in ("jsonl",):
        raise ValueError(f"vector columns cannot be written as {fmt}")
    return TextSink(path, columns, fmt)
