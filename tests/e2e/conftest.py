"""End-to-end fixtures: real ``padless serve`` processes on free loopback ports (see ``e2e_support``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Server, start_server

# -- fixtures -------------------------------------------------------------------------------------------------------

DEFAULT_ARGS = ("--max-length", "16", "--max-body-bytes", "20000", "--max-inputs-per-request", "8")


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Callable[..., Server]]:
    """Start servers that are all stopped at the end of the session (tests may stop theirs earlier)."""
    started: list[Server] = []

    def factory(*args: str, **kwargs: Any) -> Server:
        log_dir = tmp_path_factory.mktemp("server")
        server = start_server(kwargs.pop("model_dir", tiny_model_dir), log_dir, *args, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(server_factory: Callable[..., Server]) -> Server:
    """The shared fast dummy server: max_length 16, 20 kB bodies, 8 inputs per request."""
    return server_factory(*DEFAULT_ARGS)


@pytest.fixture(scope="session")
def slow_server(server_factory: Callable[..., Server]) -> Server:
    """A dummy server whose forward pass costs 2 ms per padded token (warm-up 1 s, a 1,000-token batch 2 s)."""
    return server_factory("--max-wait-ms", "2", delay_per_token_s=0.002)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="session")
def expected_logits(tiny_model_dir: Path, tokenizer: Any) -> Callable[[str, int], tuple[Any, int]]:
    """Logits the dummy backend must produce for one text alone (and its token count), computed in this process."""
    import numpy as np

    from padless.loader import read_info
    from padless.runtime.dummy import DummyRuntime

    runtime = DummyRuntime(read_info(tiny_model_dir))

    def compute(text: str, max_length: int) -> tuple[Any, int]:
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        arr = np.asarray([ids], dtype=np.int64)
        return runtime.forward(arr, np.ones_like(arr))[0].astype(np.float64), len(ids)

    return compute
