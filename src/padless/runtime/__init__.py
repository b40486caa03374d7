"""Backends: each turns a padded batch of token ids into logits. See :mod:`padless.runtime.base`."""

from __future__ import annotations

import os
from typing import Any

from padless.errors import ConfigError
from padless.runtime.base import ModelInfo, Runtime


def load_runtime(backend: str, path: str, info: ModelInfo, *, threads: int = 0, **options: Any) -> Runtime:
    """Instantiate the named backend for a resolved model folder."""
    if backend == "torch":
        from padless.runtime.torch import TorchRuntime

        return TorchRuntime(path, info, threads=threads)
    if backend == "dummy":
        from padless.runtime.dummy import DummyRuntime

        # The dummy backend is a test tool; its artificial latency comes from the environment so that
        # subprocess tests (resume after kill, load tests) can slow it down without a CLI flag for users.
        delay = float(os.environ.get("PADLESS_DUMMY_DELAY_PER_TOKEN_S", "0") or 0)
        return DummyRuntime(info, **{"delay_per_token_s": delay, **options})
    raise ConfigError(f"unknown backend {backend!r}")


__all__ = ["ModelInfo", "Runtime", "load_runtime"]
