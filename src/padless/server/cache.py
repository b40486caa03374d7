"""The server's result cache and the model revision that keys it."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path

import numpy as np


class ResultCache:
    """LRU of (output row, token count) keyed by (model revision, text, truncation settings): a classifier's logits,
    an embedder's raw vector (before the request's ``normalize`` and ``dimensions``, so one entry serves both)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, tuple[np.ndarray, int]] = OrderedDict()

    def get(self, key: Hashable) -> tuple[np.ndarray, int] | None:
        if self.size == 0:
            return None
        row = self._data.get(key)
        if row is not None:
            self._data.move_to_end(key)
        return row

    def put(self, key: Hashable, row: tuple[np.ndarray, int]) -> None:
        if self.size == 0:
            return
        self._data[key] = row
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)


def model_revision(path: Path) -> str:
    """A short hash of the model's config and weight files (names, sizes, mtimes): changes when the model does."""
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]
