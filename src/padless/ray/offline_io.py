"""Reading and writing files for Ray offline jobs: inputs with a stable row id, outputs that are exactly-once.

Reading: a file, a folder or a glob is expanded on the driver into a sorted list of files (any filesystem pyarrow
and Ray read: local, ``s3://``, ``gs://``, …), and :class:`PadlessFileDatasource` — a Ray Data
``FileBasedDatasource`` — reads them in Ray read tasks. Ray hands each file to ``_read_stream`` whole, in one task
(it splits the file *list* between tasks, never a file), so numbering rows inside ``_read_stream`` gives every row a
dense, unique number within its file. The rows are parsed by padless's own :class:`~padless.fileio.Reader` (not
pyarrow's CSV/JSON parsers, which stop at the first malformed row), so a bad row gets the same per-row error as in
local mode instead of failing or vanishing.

Writing: :func:`make_sink`'s Datasink names each part file after its content (the first row id and a hash of all
its row ids), writes it under a hidden temporary name and renames it into place. A retried write task rewrites the
same rows under the same name; a part that exists is complete; a resumed run reads only rows that no part holds.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from padless.errors import InputError
from padless.fileio import Reader, Row, detect_format
from padless.sinks import _jsonable  # the local Parquet sink's value cleaning (lone surrogates → U+FFFD, dates → str)

READ_ERROR = "__padless_read_error"  # a hidden column: the error a row got while being read (null: read fine)
ROW_ID_BASE = 10**12  # row_id = file_index · 10¹² + row_number: sorts as (file, row), readable in decimal
_MAGIC = set("*?[")


def expand_inputs(source: str | list[str]) -> tuple[list[str], list[str], pafs.FileSystem]:
    """The input files, sorted: ``(display paths, paths as Ray resolves them, filesystem)``. A folder contributes
    every file under it whose name does not start with ``.`` or ``_`` (Ray's and pyarrow's rule); a glob
    (``*``, ``?``, ``[…]``) matches paths below its first literal folder."""
    from ray.data.datasource.path_util import _resolve_paths_and_filesystem

    sources = [source] if isinstance(source, str) else list(source)
    display: list[str] = []
    resolved: list[str] = []
    fs: pafs.FileSystem | None = None
    for src in sources:
        scheme = src.split("://", 1)[0] + "://" if "://" in src else ""
        literal, pattern = _split_glob(src)
        try:
            (base,), fs = _resolve_paths_and_filesystem(os.path.abspath(literal) if not scheme else literal, fs)
        except Exception as err:  # pyarrow raises several types for an unknown scheme or missing credentials
            raise InputError(f"cannot read {src}: {type(err).__name__}: {err}") from None
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"cannot read {src}: no such file or folder")
        if info.type == pafs.FileType.File and pattern is None:
            found = [base]
        else:
            selector = pafs.FileSelector(base, recursive=True)
            found = [f.path for f in fs.get_file_info(selector) if f.type == pafs.FileType.File
                     and not any(part.startswith((".", "_")) for part in f.path[len(base):].split("/") if part)]
            if pattern is not None:
                full = base.rstrip("/") + "/" + pattern
                found = [p for p in found if fnmatch.fnmatchcase(p, full)]
        for path in sorted(found):
            resolved.append(path)
            display.append(scheme + path if scheme else path)
    if not resolved or fs is None:
        raise InputError(f"no input files found in {', '.join(sources)}")
    return display, resolved, fs


def _split_glob(path: str) -> tuple[str, str | None]:
    """``('reviews/2024', '*/part-*.csv')`` for ``reviews/2024/*/part-*.csv``; ``(path, None)`` without a glob."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if _MAGIC & set(part):
            return "/".join(parts[:i]) or "/", "/".join(parts[i:])
    return path, None


def input_format(paths: list[str], explicit: str | None) -> str:
    """One format for the job: ``explicit``, else the one every file's suffix names."""
    if explicit:
        return detect_format(paths[0], explicit)
    formats = {detect_format(p, None) for p in paths}
    if len(formats) > 1:
        raise InputError(f"the input mixes formats ({', '.join(sorted(formats))}); pass --input-format or select "
                         "one kind of file with a glob")
    return formats.pop()


class StreamReader(Reader):
    """padless's :class:`~padless.fileio.Reader` over an open pyarrow stream instead of a local path."""

    def __init__(self, stream: Any, path: str, fmt: str, column: str, pair_column: str | None) -> None:
        # The base class checks the options (pair column vs plain text, pair == column); "-" makes it open nothing.
        super().__init__("-", "csv" if fmt == "parquet" else fmt, column, pair_column)
        self.path, self.fmt, self._stream = path, fmt, stream
        if fmt == "parquet":
            self._open_parquet(stream, path)

    def _binary(self) -> Any:
        return self._stream


class TableReader(StreamReader):
    """The same Reader over rows already in memory (a Ray Data batch), validated as local Parquet input is."""

    def __init__(self, table: pa.Table, column: str, pair_column: str | None) -> None:
        Reader.__init__(self, "-", "csv", column, pair_column)
        self.path, self.fmt = "<dataset>", "parquet"
        self.fieldnames = list(table.column_names)
        self._pq = _Batches(table)
        self._require_column()


class _Batches:
    """What Reader needs of a ParquetFile: ``iter_batches``."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def iter_batches(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        return iter(self.table.to_batches(max_chunksize=batch_size))


def first_columns(display: str, resolved: str, fs: pafs.FileSystem, fmt: str, column: str,
                  pair_column: str | None, sample_rows: int) -> list[str]:
    """The input columns a job keeps, from its first file: the header, the Parquet schema, or (JSONL) the fields seen
    in its first ``sample_rows`` rows. Also refuses a missing column there with local mode's one line."""
    with _open(fs, resolved, fmt) as stream:
        reader = StreamReader(stream, display, fmt, column, pair_column)
        seen: dict[str, None] = {}
        for n, row in enumerate(reader.rows()):
            seen.update(dict.fromkeys(row.columns))
            if fmt != "jsonl" or n + 1 >= sample_rows:
                break
        return reader.fieldnames if fmt != "jsonl" else list(seen)


def _open(fs: pafs.FileSystem, path: str, fmt: str) -> Any:
    return fs.open_input_file(path) if fmt == "parquet" else fs.open_input_stream(path)


def _datasource_base() -> type:
    from ray.data.datasource import FileBasedDatasource

    return FileBasedDatasource  # type: ignore[no-any-return]


def make_datasource(display: list[str], resolved: list[str], fs: pafs.FileSystem, *, fmt: str, column: str,
                    pair_column: str | None, columns: list[str], id_names: tuple[str, str, str], block_rows: int,
                    done: Any = None) -> Any:
    """A Ray Data datasource for these files; ``done``: an ObjectRef of the sorted row ids to skip (resume)."""

    class PadlessFileDatasource(_datasource_base()):  # type: ignore[misc]
        """Each file read whole in one task by padless's Reader; blocks carry the row id columns."""

        def __init__(self) -> None:
            super().__init__(resolved, filesystem=fs)
            self._where = {path: (i, shown) for i, (path, shown) in enumerate(zip(resolved, display))}

        def _open_input_source(self, filesystem: Any, path: str, **open_args: Any) -> Any:
            # Parquet needs random access; the others stream (Ray's default also decompresses by suffix).
            if fmt == "parquet":
                return filesystem.open_input_file(path)
            return super()._open_input_source(filesystem, path, **open_args)

        def _read_stream(self, f: Any, path: str) -> Iterator[pa.Table]:
            index, shown = self._where[path]
            skip = None if done is None else _done_in_file(done, index)
            reader = StreamReader(f, shown, fmt, column, pair_column)
            chunk: list[Row] = []
            start = 0
            for row in reader.rows():
                chunk.append(row)
                if len(chunk) >= block_rows:
                    yield from _block(chunk, start, index, shown, columns, id_names, skip)
                    start += len(chunk)
                    chunk = []
            if chunk:
                yield from _block(chunk, start, index, shown, columns, id_names, skip)

        def get_name(self) -> str:
            return f"Padless{fmt.capitalize()}"

    return PadlessFileDatasource()


def _done_in_file(done: Any, index: int) -> np.ndarray:
    import ray

    ids = ray.get(done) if not isinstance(done, np.ndarray) else done
    lo, hi = np.searchsorted(ids, [index * ROW_ID_BASE, (index + 1) * ROW_ID_BASE])
    return np.asarray(ids[lo:hi])


def _block(chunk: list[Row], start: int, index: int, shown: str, columns: list[str], id_names: tuple[str, str, str],
           skip: np.ndarray | None) -> Iterator[pa.Table]:
    row_ids = np.arange(start, start + len(chunk), dtype=np.int64) + index * ROW_ID_BASE
    keep = np.ones(len(chunk), dtype=bool) if skip is None or not len(skip) else ~np.isin(row_ids, skip)
    if not keep.any():
        return
    rows = [row for row, k in zip(chunk, keep) if k]
    data: dict[str, Any] = {c: [_jsonable(r.columns.get(c)) for r in rows] for c in columns}
    data[READ_ERROR] = pa.array([r.error for r in rows], pa.string())
    data[id_names[0]] = pa.array(row_ids[keep], pa.int64())
    data[id_names[1]] = pa.array([shown] * len(rows), pa.string())
    data[id_names[2]] = pa.array(row_ids[keep] - index * ROW_ID_BASE, pa.int64())
    yield pa.table(data)


def make_sink(folder: str, fs: pafs.FileSystem, id_column: str) -> Any:
    """A Ray Data Datasink that writes each write task's rows as one Parquet part (:func:`write_part`)."""
    from ray.data import Datasink

    class ExactlyOnceParquetSink(Datasink):  # type: ignore[misc,type-arg]
        def write(self, blocks: Any, ctx: Any) -> int:
            tables = [b if isinstance(b, pa.Table) else pa.Table.from_pandas(b) for b in blocks]
            tables = [t for t in tables if t.num_rows]
            if not tables:
                return 0
            table = pa.concat_tables(tables, promote_options="permissive")
            write_part(fs, folder, table, id_column)
            return int(table.num_rows)

        def get_name(self) -> str:
            return "PadlessParquet"

    return ExactlyOnceParquetSink()


def part_name(ids: np.ndarray) -> str:
    """A part's name from its rows alone: the same rows always get the same name, other rows another one."""
    digest = hashlib.sha256(np.ascontiguousarray(np.sort(ids), dtype="<i8").tobytes()).hexdigest()[:16]
    return f"part-{int(ids.min()):019d}-{digest}.parquet"


def write_part(fs: pafs.FileSystem, folder: str, table: pa.Table, id_column: str) -> str:
    """Write ``table`` under a hidden temporary name, make it durable, rename it to its content name."""
    import pyarrow.parquet as pq

    ids = table.column(id_column).to_numpy()
    final = f"{folder.rstrip('/')}/{part_name(ids)}"
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{folder.rstrip('/')}/.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)  # atomic: the name shows only a whole part
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    else:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        put_whole(fs, final, buffer.getvalue())
    return final


def put_whole(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Put ``data`` at ``path`` on a remote filesystem: written under a hidden temporary name in the same folder
    (which a later run removes), then moved, so that the object at ``path`` appears whole or not at all."""
    tmp = f"{path.rsplit('/', 1)[0]}/.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)
