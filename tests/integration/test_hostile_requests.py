"""Requests a CRM would not send, against the real server (``retention serve`` in a subprocess): each answers its
documented 4xx in the one error shape, logs no traceback and shows no server path (issue 14, "Requests")."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import server_util as http

MAX_BODY = 200_000
MARKER = "CLIENT-DATA-7f3a"
"""Sent inside bad requests: it must never reach the server's log."""


@pytest.fixture(scope="module")
def bundle(workspace, tmp_path_factory) -> Path:
    """The champion saved as a local model directory (so a test can make a reload fail by moving it away)."""
    import os

    from serving.loader import load_model

    os.environ["MLFLOW_TRACKING_URI"] = workspace.tracking_uri
    path = tmp_path_factory.mktemp("hostile") / "bundle"
    load_model("models:/retention@champion").save(path)
    return path


@pytest.fixture(scope="module")
def server(workspace, bundle) -> Iterator[http.Server]:
    s = http.start_server(workspace, None, str(bundle), {"RETENTION_MAX_BODY_BYTES": str(MAX_BODY)})
    yield s
    http.stop(s)


def inline(*transactions: dict, as_of: str | None = "2024-12-30", **extra) -> dict:
    body = {"customers": [{"customer_id": "a", "transactions": list(transactions)}], **extra}
    return {**body, "as_of": as_of} if as_of else body


def post_json(server: http.Server, path: str, body, **headers) -> httpx.Response:
    return server.post(path, body, headers=headers or None)


# --- body size -------------------------------------------------------------------------------------------------


def test_a_chunked_body_over_the_limit_is_413_without_content_length(server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"customers": [{"customer_id": "'
        for _ in range(40):  # 40 x 64 KiB = 2.5 MiB, twelve times the limit
            yield b"x" * 65_536
        yield b'"}]}'

    response = httpx.post(
        server.base + "/predict", content=chunks(), headers={"content-type": "application/json"}, timeout=30
    )
    assert "content-length" not in response.request.headers  # sent chunked: only counting can see the size
    body = http.assert_error_shape(response, 413)
    assert body["error"] == f"request body of more than {MAX_BODY} bytes exceeds the limit of {MAX_BODY} bytes"


def test_a_chunked_body_under_the_limit_is_answered(server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"customers": '
        yield b'[{"customer_id": "nobody"}]}'

    response = httpx.post(
        server.base + "/predict", content=chunks(), headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [
        {"customer_id": "nobody", "error": "unknown customer_id: not in the online store"}
    ]


def test_a_declared_content_length_over_the_limit_is_413(server) -> None:
    big = b'{"customers": [{"customer_id": "' + b"x" * MAX_BODY + b'"}]}'
    response = httpx.post(server.base + "/rank", content=big, headers={"content-type": "application/json"})
    assert http.assert_error_shape(response, 413)["error"] == (
        f"request body of {len(big)} bytes exceeds the limit of {MAX_BODY} bytes"
    )


# --- content types -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/predict", "/rank", "/model", "/admin/reload"])
def test_multipart_is_415_on_every_post_route(server, path) -> None:
    response = httpx.post(server.base + path, files={"customers": ("c.json", b"[]")}, headers=http.ADMIN)
    body = http.assert_error_shape(response, 415)
    assert body["error"] == "content type 'multipart/form-data' is not supported: send 'application/json'"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_other_content_types_are_415(server, content_type) -> None:
    response = httpx.post(server.base + "/predict", content=b"customers=a", headers={"content-type": content_type})
    assert http.assert_error_shape(response, 415)["error"].startswith(f"content type '{content_type}'")


def test_json_with_a_charset_is_json(server) -> None:
    response = httpx.post(
        server.base + "/predict",
        content=b'{"customers": [{"customer_id": "nobody"}]}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text


# --- strict bodies -----------------------------------------------------------------------------------------------

TX = {"timestamp": "2024-06-01", "amount": 5.0}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/predict", {"customers": [{"customer_id": "a"}], "extra": 1}, "extra"),
        ("/predict", {"customers": [{"customer_id": "a"}], "top_k": 1}, "top_k"),
        ("/rank", {"customers": [{"customer_id": "a"}], "extra": 1}, "extra"),
        ("/predict", {"customers": [{"customer_id": "a", "extra": 1}]}, "customers[0].extra"),
        ("/predict", inline({"timestamp": "2024-06-01", "amount": True}), "customers[0].transactions[0].amount"),
        ("/predict", inline({"timestamp": "2024-06-01", "amount": False}), "customers[0].transactions[0].amount"),
        (
            "/predict",
            inline({"timestamp": "2024-06-01", "quantity": True, "unit_price": 2.0}),
            "customers[0].transactions[0].quantity",
        ),
        (
            "/predict",
            inline({"timestamp": "2024-06-01", "quantity": 1, "unit_price": True}),
            "customers[0].transactions[0].unit_price",
        ),
        ("/rank", {"customers": [{"customer_id": "a"}], "top_k": True}, "top_k"),
        ("/rank", {"customers": [{"customer_id": "a"}], "top_k": "3"}, "top_k"),
        ("/predict", {"customers": [{"customer_id": "a"}], "as_of": 20241230}, "as_of"),
    ],
)
def test_unknown_fields_and_booleans_as_numbers_are_400_naming_the_field(server, path, body, field) -> None:
    assert http.assert_error_shape(post_json(server, path, body), 400)["field"] == field


def test_integers_stay_valid_numbers(server) -> None:
    body = inline({"timestamp": "2024-06-01", "quantity": 2, "unit_price": 3}, {"timestamp": "2024-07-01", "amount": 4})
    response = post_json(server, "/rank", {**body, "top_k": 1})
    assert response.status_code == 200, response.text
    assert [r["customer_id"] for r in response.json()["ranking"]] == ["a"]


# --- timestamps over HTTP ----------------------------------------------------------------------------------------

NOT_ISO = "is not an ISO 8601 date or datetime (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, optional offset)"
RANGE = "1677-09-21T00:12:44Z .. 2262-04-11T23:47:16Z"


@pytest.mark.parametrize(
    ("timestamp", "shown"),
    [
        ("06/01/2024", "'06/01/2024'"),  # month-first would be June 1, day-first January 6: neither is guessed
        ("01-06-2024", "'01-06-2024'"),
        ("2024/06/01", "'2024/06/01'"),
        ("\uff12\uff10\uff12\uff14-06-01", "'\uff12\uff10\uff12\uff14-06-01'"),  # full-width digits
        ("2024-06-01\x00", "'2024-06-01\\x00'"),  # NUL, shown escaped
        ("June 1, 2024", "'June 1, 2024'"),
        ("1717200000", "'1717200000'"),
    ],
)
def test_timestamps_are_iso_8601_only(server, timestamp, shown) -> None:
    body = http.assert_error_shape(post_json(server, "/predict", inline({"timestamp": timestamp, "amount": 1.0})), 422)
    field = "customers[0].transactions[0].timestamp"
    assert body == {"error": f"{field}: {shown} {NOT_ISO}", "status": 422, "field": field}


def test_as_of_is_iso_8601_only(server) -> None:
    body = http.assert_error_shape(
        post_json(server, "/predict", {"customers": [{"customer_id": "a"}], "as_of": "12/30/2024"}), 422
    )
    assert body == {"error": f"as_of: '12/30/2024' {NOT_ISO}", "status": 422, "field": "as_of"}


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-06-01",
        "2024-06-01T10:00:00Z",
        "2024-06-01T10:00:00+01:00",
        "2024-06-01 10:00:00.123456",
        "2024-06-01T10:00",
    ],
)
def test_iso_8601_dates_and_datetimes_are_scored(server, timestamp) -> None:
    response = post_json(server, "/predict", inline({"timestamp": timestamp, "amount": 10.0}, TX))
    assert response.status_code == 200, response.text
    assert "error" not in response.json()["predictions"][0]


def test_the_documented_bounds_answer_the_right_sentence(server) -> None:
    field = "customers[0].transactions[0].timestamp"
    oldest = post_json(server, "/predict", inline({"timestamp": "1677-09-22", "amount": 1.0}, TX))
    assert oldest.status_code == 200, oldest.text  # inside the range: a (very old) purchase, not "after as_of"
    assert "error" not in oldest.json()["predictions"][0]
    cases = {
        "2262-04-11": f"{field}: 2262-04-11 00:00:00+00:00 is after as_of 2024-12-30",
        "2262-04-11T23:59:59": f"{field}: '2262-04-11T23:59:59' is outside the supported range {RANGE}",
        "1677-09-21": f"{field}: '1677-09-21' is outside the supported range {RANGE}",
        "2024-02-30": f"{field}: '2024-02-30' is not a date or datetime",
    }
    for timestamp, error in cases.items():
        response = post_json(server, "/predict", inline({"timestamp": timestamp, "amount": 1.0}))
        assert http.assert_error_shape(response, 422)["error"] == error


def test_a_transaction_id_repeated_by_two_customers_is_two_orders(server) -> None:
    """Lines are keyed by (customer, transaction_id): the second customer's purchase is not dropped."""
    first = [{"timestamp": "2024-03-01", "amount": 20.0, "transaction_id": "t1"}, TX]
    second = [{"timestamp": "2024-11-01", "amount": 300.0, "transaction_id": "t1"}]
    both = {"customers": [{"customer_id": "a", "transactions": first}, {"customer_id": "b", "transactions": second}]}
    together = post_json(server, "/predict", {**both, "as_of": "2024-12-30"}).json()["predictions"]
    alone = [
        post_json(server, "/predict", {"customers": [c], "as_of": "2024-12-30"}).json()["predictions"][0]
        for c in both["customers"]
    ]
    assert [p["customer_id"] for p in together] == ["a", "b"]
    for t, a in zip(together, alone, strict=True):
        assert "error" not in t
        assert t["churn_probability"] == pytest.approx(a["churn_probability"], abs=1e-12)
        assert t["expected_value"] == pytest.approx(a["expected_value"], abs=1e-9)
    assert together[0]["expected_value"] != together[1]["expected_value"]


# --- OpenAPI -----------------------------------------------------------------------------------------------------


def test_the_openapi_document_lists_what_the_service_answers(server) -> None:
    spec = server.get("/docs.json").json()
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    expected = {
        "/predict": {"200", "400", "401", "413", "415", "422", "500", "503"},
        "/rank": {"200", "400", "401", "413", "415", "422", "500", "503"},
        "/model": {"200", "401", "413", "415", "500", "503"},
        "/admin/reload": {"200", "401", "403", "409", "413", "415", "500"},
    }
    for path, statuses in expected.items():
        responses = spec["paths"][path]["post"]["responses"]
        assert set(responses) == statuses, path
        for status in statuses - {"200"}:
            assert responses[status]["content"] == error, (path, status)
    schemas = spec["components"]["schemas"]
    shape = schemas["Error"]
    assert shape["required"] == ["error", "status"] and shape["additionalProperties"] is False
    assert {k: v["type"] for k, v in shape["properties"].items()} == {
        "error": "string",
        "status": "integer",
        "field": "string",
        "detail": "array",
    }
    assert shape["properties"]["detail"]["items"]["properties"]["loc"]["type"] == "array"
    rank = spec["paths"]["/rank"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert rank["additionalProperties"] is False and rank["required"] == ["customers"]
    assert rank["properties"]["top_k"] == {**rank["properties"]["top_k"], "type": "integer", "nullable": True}
    assert rank["properties"]["as_of"]["nullable"] is True
    predict = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(predict["properties"]) == {"customers", "as_of"} and predict["additionalProperties"] is False
    transaction = schemas["Transaction"]
    assert transaction["additionalProperties"] is False
    assert "nullable" not in transaction["properties"]["timestamp"]
    for name in ("amount", "quantity", "unit_price", "transaction_id", "line_id", "category", "channel"):
        assert transaction["properties"][name]["nullable"] is True, name
    assert schemas["Customer"]["properties"]["transactions"]["nullable"] is True
    ours = str([predict, rank, schemas["Transaction"], schemas["Customer"]])
    assert "anyOf" not in ours and "'null'" not in ours


# --- admin, paths, logs ------------------------------------------------------------------------------------------


def test_admin_reload_needs_the_admin_key(server) -> None:
    for headers in ({}, {"X-Admin-Key": "wrong"}, {"Authorization": f"Bearer {http.ADMIN_KEY}"}):
        body = http.assert_error_shape(server.post("/admin/reload", {}, headers=headers), 403)
        assert body["error"] == "missing or wrong admin key: send RETENTION_ADMIN_KEY as 'X-Admin-Key'"
    assert server.post("/admin/reload", {}, headers=http.ADMIN).status_code == 200


def test_admin_reload_is_refused_when_no_admin_key_is_configured(workspace, bundle) -> None:
    s = http.start_server(workspace, None, str(bundle), {"RETENTION_ADMIN_KEY": ""}, wait_ready=False)
    try:
        for headers in ({}, {"X-Admin-Key": ""}, http.ADMIN):
            body = http.assert_error_shape(s.post("/admin/reload", {}, headers=headers), 403)
            assert body["error"] == (
                "admin routes are disabled: set RETENTION_ADMIN_KEY on the server and send it as 'X-Admin-Key'"
            )
    finally:
        http.stop(s)


def test_a_failed_reload_answers_409_without_server_paths(server, bundle) -> None:
    moved = bundle.with_name("bundle-away")
    shutil.move(bundle, moved)
    try:
        response = server.post("/admin/reload", {}, headers=http.ADMIN)
    finally:
        shutil.move(moved, bundle)
    body = http.assert_error_shape(response, 409)
    assert body["error"].startswith("reload failed, version ")
    assert str(bundle.parent) not in response.text and not re.search(
        r"(?<![\w.:])/(tmp|home|root|work|var)/", response.text
    )
    assert server.post("/model", {}).status_code == 200  # the old version keeps serving


def test_client_errors_leave_one_quiet_line_not_a_traceback(server, workspace) -> None:
    bad = [
        ("/predict", {"customers": [{"customer_id": MARKER, "transactions": [{"timestamp": MARKER, "amount": 1}]}]}),
        ("/predict", {"customers": [{"customer_id": 42, "note": MARKER}]}),
        ("/rank", {"customers": [{"customer_id": MARKER}], "top_k": MARKER}),
        ("/predict", {"customers": [], MARKER: 1}),
        ("/predict", inline({"timestamp": "2024-06-01", "amount": MARKER})),
    ]
    before = http.server_log(workspace, server).count("client error: ")
    for path, body in bad:
        assert 400 <= post_json(server, path, body).status_code < 500
    for content in (b"{" + MARKER.encode(), MARKER.encode()):
        response = httpx.post(server.base + "/predict", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 400
    httpx.post(server.base + "/predict", files={"f": (MARKER, MARKER.encode())})
    log = http.server_log(workspace, server)
    assert log.count("client error: ") - before == len(bad) + 3  # one line per bad request
    assert "client error: POST /predict answered 415" in log
    assert "client error: POST /predict answered 400 (1 schema problem(s), first float_type)" in log
    assert "client error: POST /predict answered 422 (customers[0].transactions[0].timestamp)" in log
    assert "Traceback" not in log and MARKER not in log
    assert "Exception on /" not in log  # BentoML's ERROR line for a request it failed
