"""--api-key / PADLESS_API_KEY: every route but /health needs the key (Bearer or X-API-Key); it never reaches a log."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from e2e_support import Server

KEY = "e2e-Secret-Key-7f3a9c"  # distinctive, so a leak into the logs can not be a coincidence
ENV_KEY = "env-Secret-Key-51d0be"

PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/predict", {"inputs": "auth check"}),
    ("POST", "/", {"inputs": "auth check"}),
    ("POST", "/v1/classify", {"inputs": ["auth check"]}),
    ("POST", "/tokenize", {"inputs": "auth check"}),
    ("GET", "/ready", None),
    ("GET", "/ping", None),
    ("GET", "/info", None),
    ("GET", "/metrics", None),
]


@pytest.fixture(scope="module")
def auth_server(server_factory: Callable[..., Server]) -> Iterator[Server]:
    server = server_factory("--api-key", KEY, api_key=KEY)
    yield server
    server.stop()


def _call(server: Server, method: str, path: str, body: dict[str, Any] | None,
          headers: dict[str, str]) -> httpx.Response:
    # A bare client: no default auth header.
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        return c.request(method, path, json=body, headers=headers)


def _check_401(r: httpx.Response) -> None:
    assert r.status_code == 401, (r.request.url, r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "error_type", "request_id"}
    assert body["error_type"] == "unauthorized"
    assert r.headers.get("www-authenticate") == "Bearer"
    assert KEY not in r.text and ENV_KEY not in r.text


WRONG = [
    {},
    {"Authorization": "Bearer wrong-key-000000"},
    {"Authorization": f"Bearer {KEY}x"},
    {"Authorization": f"Bearer {KEY[:-1]}"},
    {"Authorization": f"Basic {KEY}"},
    {"Authorization": KEY},
    {"X-API-Key": "wrong-key-000000"},
    {"X-API-Key": ""},
    {"Authorization": "Bearer wrong-key-000000", "X-API-Key": KEY},  # a wrong Bearer is not rescued by X-API-Key
]


@pytest.mark.parametrize("method,path,body", PROTECTED, ids=[p for _, p, _ in PROTECTED])
def test_protected_routes_refuse_missing_or_wrong_keys(auth_server: Server, method: str, path: str,
                                                       body: dict[str, Any] | None) -> None:
    for headers in WRONG:
        _check_401(_call(auth_server, method, path, body, headers))


@pytest.mark.parametrize("method,path,body", PROTECTED, ids=[p for _, p, _ in PROTECTED])
@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"Authorization": f"bearer {KEY}"},
                                     {"X-API-Key": KEY}], ids=["bearer", "bearer-lowercase", "x-api-key"])
def test_protected_routes_accept_the_key(auth_server: Server, method: str, path: str, body: dict[str, Any] | None,
                                         headers: dict[str, str]) -> None:
    r = _call(auth_server, method, path, body, headers)
    assert r.status_code == 200, r.text
    if path in ("/predict", "/"):  # one input: one list of {label, score} for the 3 labels
        assert len(r.json()) == 3
    if path == "/v1/classify":
        assert r.json()["results"][0]["error"] is None


def test_health_needs_no_key(auth_server: Server) -> None:
    r = _call(auth_server, "GET", "/health", None, {})
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
def test_schema_and_docs_need_the_key(auth_server: Server, path: str) -> None:
    _check_401(_call(auth_server, "GET", path, None, {}))


def test_schema_errors_without_key_are_401(auth_server: Server) -> None:
    """The key is checked before the body is validated, so a stranger learns nothing about the schema."""
    _check_401(_call(auth_server, "POST", "/predict", {"inputs": 5}, {}))
    _check_401(_call(auth_server, "POST", "/v1/classify", {"inputs": [], "bogus": 1}, {}))


def test_invalid_json_without_key_is_401(auth_server: Server) -> None:
    with httpx.Client(base_url=auth_server.url, timeout=30.0) as c:
        r = c.post("/predict", content=b'{"inputs": ', headers={"Content-Type": "application/json"})
    _check_401(r)


def test_key_never_logged(auth_server: Server) -> None:
    # Traffic that could tempt a logger: wrong keys, right keys, errors, a 404.
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}zz"}):
        _call(auth_server, "POST", "/predict", {"inputs": ""}, headers)
        _call(auth_server, "GET", "/nope", None, headers)
    code = auth_server.stop()
    assert code == 0
    logs = auth_server.logs()
    assert logs.strip(), "the server wrote no log at all"
    assert KEY not in logs and KEY[:12] not in logs


@pytest.mark.slow
def test_api_key_from_environment(server_factory: Callable[..., Server]) -> None:
    server = server_factory(api_key=ENV_KEY, env={"PADLESS_API_KEY": ENV_KEY})
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            assert c.post("/predict", json={"inputs": "env key"}).status_code == 401
            assert c.get("/info").status_code == 401
            assert c.get("/health").status_code == 200
            ok = c.post("/predict", json={"inputs": "env key"}, headers={"X-API-Key": ENV_KEY})
            assert ok.status_code == 200 and len(ok.json()) == 3
            assert c.get("/metrics", headers={"Authorization": f"Bearer {ENV_KEY}"}).status_code == 200
    finally:
        assert server.stop() == 0
    assert ENV_KEY not in server.logs()
