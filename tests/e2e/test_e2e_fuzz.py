"""Random JSON (and random bytes) at /predict and /v1/classify: never a 5xx, never a traceback, always the envelope.

Lone surrogates are left out of the generated text on purpose: they have their own tests in test_e2e_malformed.py
(two of which document a real 500).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from e2e_support import Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROUTES = ["/predict", "/v1/classify"]

texts = st.text(max_size=60)
scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | texts
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=12)
items = texts | st.fixed_dictionaries({"text": texts}, optional={"id": st.none() | texts | json_values})
options = {"raw_scores": st.booleans() | json_values, "truncate": st.booleans() | json_values,
           "top_k": st.integers(min_value=-3, max_value=5) | json_values}
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"inputs": json_values}, optional=options),
    st.fixed_dictionaries({"inputs": texts | st.lists(texts, max_size=10)}, optional=options),
    st.fixed_dictionaries({"inputs": st.lists(items, max_size=10)}, optional=options),
)


def _check(r: httpx.Response, route: str) -> None:
    assert r.status_code < 500, (r.status_code, r.text)
    assert "Traceback" not in r.text
    body = r.json()
    if r.status_code == 200:
        if route == "/predict":  # one input: a list of 3 {label, score}; a batch: a list of such lists
            assert isinstance(body, list) and body
            lists = [body] if isinstance(body[0], dict) else body
            assert all(len(scores) == 3 and all(set(s) == {"label", "score"} for s in scores) for scores in lists)
        else:
            assert set(body) == {"request_id", "model", "results", "timing_ms"}
    else:
        assert set(body) == {"error", "error_type", "request_id"}, body


@pytest.fixture(scope="module")
def fuzz_client(server: Server) -> Any:
    with server.client() as client:
        yield client


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(route=st.sampled_from(ROUTES), body=bodies)
def test_random_json_never_5xx(fuzz_client: httpx.Client, route: str, body: Any) -> None:
    r = fuzz_client.post(route, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    _check(r, route)


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(route=st.sampled_from(ROUTES), body=st.binary(max_size=300))
def test_random_bytes_never_5xx(fuzz_client: httpx.Client, route: str, body: bytes) -> None:
    r = fuzz_client.post(route, content=body, headers={"Content-Type": "application/json"})
    _check(r, route)
