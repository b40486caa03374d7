"""Streaming readers and writers for CSV, TSV, JSONL, Parquet and plain text (one input per line).

Readers yield chunks of :class:`Row` in file order and never hold more than one chunk. A row that cannot be read
(undecodable bytes, a JSONL line that is not a JSON object, a missing text field) is still yielded, with its
``error`` set, so the job can account for it. With a ``pair_column`` each row's input is the text pair
``(column, pair_column)`` (sentence-pair models: NLI, paraphrase, cross-encoders), and a missing or non-text second
text is that row's error too.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from padless.errors import InputError

FORMATS = ("csv", "tsv", "jsonl", "parquet", "txt")
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
             ".parquet": "parquet", ".pq": "parquet", ".txt": "txt", ".text": "txt"}

csv.field_size_limit(2**31 - 1)  # long reviews are normal input, not an attack on the reader


@dataclass
class Row:
    """One input row: its original columns, the text to classify, or why it cannot be read."""

    columns: dict[str, Any]
    text: str | tuple[str, str] | None  # a (text, text_pair) tuple when the reader has a pair column
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def detect_format(path: str, explicit: str | None) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise InputError(f"unknown format {explicit!r}; choose one of {', '.join(FORMATS)}")
        return explicit
    fmt = _SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell the format of {path!r} from its name; pass --format ({', '.join(FORMATS)})")
    return fmt


_SURROGATES = re.compile("[\ud800-\udfff]")


def clean(value: Any) -> Any:
    """Make a string writable as UTF-8: undecodable bytes and lone surrogates become U+FFFD."""
    return _SURROGATES.sub("\ufffd", value) if isinstance(value, str) else value


def _text_error(text: str) -> str | None:
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return "undecodable: the text is not valid UTF-8"


def count_rows(path: str, fmt: str) -> int | None:
    """A fast row count for progress and ETA (newlines; exact for txt/jsonl, approximate for quoted CSV)."""
    if path == "-":
        return None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    n = 0
    last = b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    n += last != b"\n"
    return n - 1 if fmt in ("csv", "tsv") else n


class Reader:
    """Iterates an input in chunks of rows, optionally skipping rows already done."""

    def __init__(self, path: str, fmt: str, column: str, pair_column: str | None = None) -> None:
        self.path, self.fmt, self.column, self.pair_column = path, fmt, column, pair_column
        self.fieldnames: list[str] = [column] if fmt == "txt" else []
        if pair_column is not None and fmt == "txt":
            raise InputError("--pair-column needs a CSV, TSV, JSONL or Parquet input (plain text has one column)")
        if pair_column == column:
            raise InputError(f"--pair-column must name another column than --column ({column!r})")
        if path != "-" and not Path(path).is_file():
            raise InputError(f"cannot read {path}: no such file")
        if fmt == "parquet":
            if path == "-":
                raise InputError("Parquet cannot be read from stdin; pass a file")
            self._open_parquet(path, path)

    def _open_parquet(self, source: Any, path: str) -> None:
        """Open ``source`` (a path or a random-access file) as Parquet, named ``path`` in errors; check the columns."""
        import pyarrow.parquet as pq

        try:
            self._pq = pq.ParquetFile(source)
        except Exception as err:  # pyarrow raises several unrelated types for a bad file
            raise InputError(f"cannot read {path} as Parquet: {type(err).__name__}") from None
        self.fieldnames = list(self._pq.schema_arrow.names)
        self._require_column()

    def _require_column(self) -> None:
        for column in (self.column, self.pair_column):
            if column is not None and column not in self.fieldnames:
                raise InputError(
                    f"column {column!r} not found in {self.path}; columns: {', '.join(self.fieldnames) or 'none'}")

    def _paired(self, row: Row, record: dict[str, Any], where: str) -> Row:
        """Make ``row`` a pair row when there is a pair column; its second text's problem becomes the row's error."""
        if self.pair_column is None or row.error is not None:
            return row
        second = record.get(self.pair_column)
        if not isinstance(second, str):
            problem = "missing or null" if second is None else f"{type(second).__name__}, not text"
            return Row(record, None, f"{where}{self.pair_column!r} is {problem}")
        error = _text_error(second)
        return Row(record, None, error) if error else Row(record, (row.text, second))  # type: ignore[arg-type]

    def _binary(self) -> IO[bytes]:
        return sys.stdin.buffer if self.path == "-" else open(self.path, "rb")

    def rows(self) -> Iterator[Row]:
        if self.fmt == "parquet":
            for batch in self._pq.iter_batches(batch_size=4096):
                for record in batch.to_pylist():
                    text = record.get(self.column)
                    if text is not None and not isinstance(text, str):
                        yield Row(record, None, f"the {self.column!r} value is {type(text).__name__}, not text")
                    elif text is None:
                        yield Row(record, None, f"{self.column!r} is null")
                    else:
                        yield self._paired(Row(record, text, None), record, "")
            return
        handle = self._binary()
        try:
            stream = io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", newline="")
            if self.fmt == "txt":
                for line in stream:
                    text = line.rstrip("\r\n")
                    yield Row({self.column: text}, text, _text_error(text))
            elif self.fmt == "jsonl":
                yield from self._jsonl(stream)
            else:
                yield from self._delimited(stream)
        finally:
            if handle is not sys.stdin.buffer:
                handle.close()

    def _jsonl(self, stream: IO[str]) -> Iterator[Row]:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                yield Row({}, None, f"line {number} is blank")
                continue
            try:
                record = json.loads(line)
            except ValueError:
                yield Row({}, None, f"line {number} is not valid JSON")
                continue
            if not isinstance(record, dict):
                yield Row({}, None, f"line {number} is not a JSON object")
                continue
            text = record.get(self.column)
            if not isinstance(text, str):
                problem = "missing" if self.column not in record else f"{type(text).__name__}, not text"
                yield Row(record, None, f"line {number}: field {self.column!r} is {problem}")
            else:
                yield self._paired(Row(record, text, _text_error(text)), record, f"line {number}: field ")

    def _delimited(self, stream: IO[str]) -> Iterator[Row]:
        reader = csv.DictReader(stream, delimiter="\t" if self.fmt == "tsv" else ",")
        self.fieldnames = list(reader.fieldnames or [])
        self._require_column()
        for record in reader:
            extra = record.pop(None, None)  # type: ignore[call-overload]
            text = record.get(self.column)
            if text is None:
                yield Row(record, None, f"row has fewer fields than the header (no {self.column!r})")
            else:
                row = Row(record, text, _text_error(text) or ("row has more fields than the header" if extra else None))
                yield self._paired(row, record, "row has fewer fields than the header: ")

    def chunks(self, size: int, skip: int = 0) -> Iterator[list[Row]]:
        chunk: list[Row] = []
        for index, row in enumerate(self.rows()):
            if index < skip:
                continue
            chunk.append(row)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
