"""Malformed requests get a 4xx in the JSON envelope {error, error_type, request_id}: never a 5xx, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_support import Server

ROUTES = ["/predict", "/v1/classify"]


def _check_envelope(r: httpx.Response, statuses: set[int] | int, error_type: str | None = None) -> dict:
    statuses = {statuses} if isinstance(statuses, int) else statuses
    assert "Traceback" not in r.text and 'File "' not in r.text
    assert r.status_code in statuses, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error", "error_type", "request_id"}, body
    assert isinstance(body["error"], str) and 0 < len(body["error"]) <= 400
    assert isinstance(body["error_type"], str) and body["error_type"]
    assert isinstance(body["request_id"], str) and body["request_id"]
    if "x-request-id" in r.headers:
        assert r.headers["x-request-id"] == body["request_id"]
    if error_type is not None:
        assert body["error_type"] == error_type, body
    return body


def _post(server: Server, route: str, body: bytes, **headers: str) -> httpx.Response:
    with server.client() as c:
        return c.post(route, content=body, headers={"Content-Type": "application/json", **headers})


def _j(value: object) -> bytes:
    return json.dumps(value).encode()


# Bodies that are wrong for both routes, whatever the route's schema.
BAD_FOR_BOTH: list[tuple[str, bytes]] = [
    ("empty list", _j({"inputs": []})),
    ("int inputs", _j({"inputs": 5})),
    ("int items", _j({"inputs": [1, 2]})),
    ("null inputs", _j({"inputs": None})),
    ("nested list", _j({"inputs": [[["a"]]]})),
    ("missing inputs", _j({})),
    ("body is a list", _j(["a", "b"])),
    ("body is a string", _j("a")),
    ("body is null", b"null"),
    ("empty body", b""),
    ("truncated json", b'{"inputs": '),
    ("python repr", b"{'inputs': 'x'}"),
    ("NaN inputs", b'{"inputs": NaN}'),
    ("raw_scores not bool", _j({"inputs": ["x"], "raw_scores": "maybe"})),
    ("truncate not bool", _j({"inputs": ["x"], "truncate": [1]})),
    ("extra field", _j({"inputs": ["x"], "extra": 1})),
    ("invalid utf-8 bytes", b'{"inputs": ["\xff\xfe\xfd"]}'),
    ("invalid utf-8 garbage", b"\xff\xfe\x00\x81garbage"),
    ("deep nesting", b"[" * 4000 + b"]" * 4000),
    ("deep nesting in inputs", b'{"inputs": ' + b"[" * 3000 + b"]" * 3000 + b"}"),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name,body", BAD_FOR_BOTH, ids=[n for n, _ in BAD_FOR_BOTH])
def test_malformed_body_is_4xx_envelope(server: Server, route: str, name: str, body: bytes) -> None:
    r = _post(server, route, body)
    _check_envelope(r, set(range(400, 500)))


@pytest.mark.parametrize("body", [
    _j({"inputs": [{"text": "x", "foo": 1}]}),
    _j({"inputs": [{"id": 5, "text": "x"}]}),
    _j({"inputs": [{"id": "a"}]}),
    _j({"inputs": ["x"], "top_k": -1}),
    _j({"inputs": ["x"], "top_k": "two"}),
    _j({"inputs": ["x"], "top_k": 1.5}),
    _j({"inputs": "a bare string"}),  # /v1/classify takes a list only
], ids=["item extra field", "int id", "item without text", "negative top_k", "str top_k", "float top_k",
        "bare string"])
def test_classify_schema_errors(server: Server, body: bytes) -> None:
    body_json = _check_envelope(_post(server, "/v1/classify", body), 422, "validation_error")
    assert body_json["error"].startswith("invalid request")


@pytest.mark.parametrize("route", ROUTES)
def test_empty_list_names_the_problem(server: Server, route: str) -> None:
    body = _check_envelope(_post(server, route, _j({"inputs": []})), 422, "validation_error")
    assert body["error"] == "invalid request: inputs must not be empty"


@pytest.mark.parametrize("route", ROUTES)
def test_too_many_inputs_is_422_naming_the_limit(server: Server, route: str) -> None:
    def inputs(n: int) -> list[Any]:  # /predict's batch is TEI's list of [text] (bare strings would be pairs)
        return [[f"t{i}"] if route == "/predict" else f"t{i}" for i in range(n)]

    body = _check_envelope(_post(server, route, _j({"inputs": inputs(9)})), 422, "input_error")
    assert "9" in body["error"] and "8" in body["error"]
    with server.client() as c:  # exactly at the limit is fine
        assert c.post(route, json={"inputs": inputs(8)}).status_code == 200


@pytest.mark.parametrize("route", ROUTES)
def test_extra_field_is_refused_by_name(server: Server, route: str) -> None:
    body = _check_envelope(_post(server, route, _j({"inputs": ["x"], "surprise": 1})), 422, "validation_error")
    assert "surprise" in body["error"]


def test_invalid_json_is_422(server: Server) -> None:
    _check_envelope(_post(server, "/predict", b'{"inputs": "x",}'), 422, "validation_error")


# -- lone surrogates and undecodable text ---------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b'{"inputs": "\\ud800"}',
    b'{"inputs": ["fine", "\\udfff tail"]}',
    b'{"inputs": "\xed\xa0\x80"}',  # a UTF-8-encoded surrogate: json.loads' surrogatepass lets it through
], ids=["escape", "escape in list", "encoded surrogate bytes"])
def test_predict_lone_surrogate_is_422(server: Server, body: bytes) -> None:
    r = _post(server, "/predict", body)
    if r.status_code == 422 and r.json().get("error_type") == "validation_error":
        return  # refused by the parser: also fine
    _check_envelope(r, 422, "undecodable")


def test_classify_lone_surrogate_text_is_a_per_item_error(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/classify", content=b'{"inputs": [{"id": "bad", "text": "\\ud800"}, "fine text"]}',
                   headers={"Content-Type": "application/json"})
    if r.status_code == 422:  # refused whole by the parser: fine too
        _check_envelope(r, 422)
        return
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["id"] == "bad" and results[0]["error"]["type"] == "undecodable"
    assert results[1]["error"] is None and results[1]["label"] in ("negative", "neutral", "positive")


def test_classify_lone_surrogate_id_is_not_5xx(server: Server) -> None:
    r = _post(server, "/v1/classify", b'{"inputs": [{"id": "\\ud800", "text": "fine"}]}')
    assert r.status_code < 500, r.text
    assert "Traceback" not in r.text


@pytest.mark.parametrize("route", ROUTES)
def test_lone_surrogate_field_name_is_not_5xx(server: Server, route: str) -> None:
    # The error message names the offending field; a surrogate there must not make the answer unencodable.
    _check_envelope(_post(server, route, b'{"inputs": ["x"], "\\ud800": 1}'), 422, "validation_error")
    _check_envelope(_post(server, route, b'{"inputs": ["x"], "a\\udfffb": {"c": 1}}'), 422, "validation_error")


# -- body size limits -----------------------------------------------------------------------------------------------

def test_body_over_limit_with_content_length_is_413(server: Server) -> None:
    body = _j({"inputs": "a" * 30_000})
    body_json = _check_envelope(_post(server, "/predict", body), 413, "payload_too_large")
    assert "20000" in body_json["error"]


def _chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    payload = _j({"inputs": "b" * (total - 20)})
    for i in range(0, len(payload), size):
        yield payload[i:i + size]


def test_streamed_body_under_limit_is_accepted(server: Server) -> None:
    with server.client() as c:
        r = c.post("/predict", content=_chunks(8_000), headers={"Content-Type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 200, r.text


def test_streamed_body_over_limit_is_413(server: Server) -> None:
    with server.client() as c:
        r = c.post("/predict", content=_chunks(30_000), headers={"Content-Type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    _check_envelope(r, 413, "payload_too_large")


def test_streamed_body_over_limit_is_4xx_not_5xx(server: Server) -> None:
    """Whatever the exact code, an over-long chunked body never reaches the model and is never a 5xx."""
    with server.client() as c:
        r = c.post("/predict", content=_chunks(30_000), headers={"Content-Type": "application/json"})
    _check_envelope(r, set(range(400, 500)))


# -- methods, routes, headers ---------------------------------------------------------------------------------------

def test_wrong_method_and_unknown_route(server: Server) -> None:
    with server.client() as c:
        _check_envelope(c.get("/predict"), 405)
        _check_envelope(c.get("/v1/classify"), 405)
        _check_envelope(c.post("/nope", json={"inputs": "x"}), 404)
        _check_envelope(c.post("/health"), 405)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", ""])
def test_bad_request_timeout_header(server: Server, value: str) -> None:
    with server.client() as c:
        r = c.post("/predict", json={"inputs": "a timeout header"}, headers={"X-Request-Timeout": value})
    if value == "":
        assert r.status_code == 200  # an empty header is no header
    else:
        body = _check_envelope(r, 422, "input_error")
        assert "X-Request-Timeout" in body["error"]


def test_server_still_healthy_after_malformed_traffic(server: Server) -> None:
    with server.client() as c:
        assert c.get("/ready").status_code == 200
        r = c.post("/predict", json={"inputs": "still working"})
    assert r.status_code == 200 and len(r.json()) == 3


def test_405_lists_the_allowed_methods(server: Server) -> None:
    with server.client() as c:
        r = c.get("/predict")
    _check_envelope(r, 405)
    assert r.headers.get("allow") == "POST"
