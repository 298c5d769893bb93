"""Bad input through every door that writes usage (the API, its batch, the Metrifox meter), on
both databases: a clear 4xx JSON error and nothing written, never a 5xx. Explicit cases for the
classics (malformed and huge JSON, wrong types, NaN / Infinity / 1e400 / 0.0000001 / -0, long
strings, control characters, unknown fields, metadata over its limit, timestamps far away), then
hypothesis-generated bodies, including ones that are not what the schema says."""

from __future__ import annotations

import base64
import io
import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api_support import C, make_key, row_counts

USAGE_FIELDS = ("customer_key", "feature_key", "event_name", "amount", "event_id", "timestamp")
METER_FIELDS = ("customer_key", "feature_key", "event_name", "quantity", "event_id", "timestamp")

GOOD = {"customer_key": C, "feature_key": "api_calls", "amount": 1}

BAD_VALUES = {
    "amount NaN": ("amount", float("nan")),
    "amount Infinity": ("amount", float("inf")),
    "amount -Infinity": ("amount", float("-inf")),
    "amount 1e400": ("amount", "RAW:1e400"),
    "amount '1e400'": ("amount", "1e400"),
    "amount below a micro": ("amount", "0.0000001"),
    "amount below a micro as number": ("amount", "RAW:0.0000001"),
    "amount negative zero": ("amount", "RAW:-0.0"),
    "amount '-0'": ("amount", "-0"),
    "amount zero": ("amount", 0),
    "amount huge": ("amount", 10**30),
    "amount boolean": ("amount", True),
    "amount list": ("amount", [1]),
    "amount object": ("amount", {"value": 1}),
    "amount text": ("amount", "one"),
    "customer_key number": ("customer_key", 12),
    "customer_key null": ("customer_key", None),
    "customer_key very long": ("customer_key", "c" * 100_000),
    "customer_key control characters": ("customer_key", "cust-\x00\x1b[31m"),
    "customer_key unknown unicode": ("customer_key", "cüst-ℌ𝔢𝔩𝔩𝔬"),
    "feature_key boolean feature": ("feature_key", "sso"),
    "feature_key unknown": ("feature_key", "nope"),
    "event_id very long": ("event_id", "e" * 10_000),
    "event_id control characters": ("event_id", "evt\n\r\t\x00"),
    "event_id number": ("event_id", 12),
    "timestamp far past": ("timestamp", "1970-01-01T00:00:00Z"),
    "timestamp far future": ("timestamp", "2999-01-01T00:00:00Z"),
    "timestamp year 10000": ("timestamp", "10000-01-01T00:00:00Z"),
    "timestamp garbage": ("timestamp", "yesterday"),
    "timestamp number": ("timestamp", 1e20),
    "metadata over its limit": ("metadata", {"k": "x" * 5000}),
    "metadata not an object": ("metadata", ["a"]),
    "metadata control characters in keys": ("metadata", {"\x00\x07": "v", "k" * 5000: 1}),
    "metadata deeply nested": ("metadata", json.loads("[" * 50 + "]" * 50)),
    "metadata NUL in a value": ("metadata", {"k": "a\x00b"}),
    "metadata lone surrogate": ("metadata", {"k": "\ud800"}),
    "customer_key lone surrogate": ("customer_key", "\udfff"),
    "event_id lone surrogate": ("event_id", "evt-\ud800"),
    "unknown field": ("quantity", 2),
    "unknown unicode field": ("ämount\x00", 2),
}


def _encode(body: dict) -> bytes:
    text = json.dumps(body, allow_nan=True)
    # "RAW:<literal>" puts a JSON number literal in the body as it is (1e400, -0.0, ...).
    for value in body.values():
        if isinstance(value, str) and value.startswith("RAW:"):
            text = text.replace(json.dumps(value), value[4:])
    return text.encode()


def _post(client, path: str, raw: bytes, key: str, content_type: str = "application/json"):
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key}
    return client.post(path, data=raw, content_type=content_type, headers=headers)


def _assert_refused_and_nothing_written(response, before) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data()[:300])
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"]["code"] and body["error"]["message"]
    assert row_counts() == before


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_refused_with_a_4xx_and_nothing_written(client, catalog, case):
    key = make_key("admin")
    field, value = BAD_VALUES[case]
    usage = {**GOOD, field: value, "event_id": GOOD.get("event_id", "bad-1")}
    if field == "event_id":
        usage["event_id"] = value
    meter = {k if k != "amount" else "quantity": v for k, v in usage.items()}
    if field == "timestamp" and isinstance(value, str):
        meter["timestamp"] = value  # not Unix milliseconds: refused too
    before = row_counts()
    for path, body in (
        ("/api/v1/usage", usage),
        ("/api/v1/usage/batch", {"events": [usage]} if field == "amount" else usage),
        ("/metrifox/meter/usage/events", meter),
    ):
        if path.startswith("/metrifox/") and case.startswith("unknown"):
            continue  # the Metrifox door ignores fields it does not know, as Metrifox does
        response = _post(client, path, _encode(body), key)
        if path == "/api/v1/usage/batch" and response.status_code == 200:
            # Each event of a batch is judged alone: the bad one gets its own 4xx.
            (result,) = response.get_json()["results"]
            assert 400 <= result["status"] < 500, (case, result)
            assert row_counts() == before
            continue
        _assert_refused_and_nothing_written(response, before)


MALFORMED = {
    "not JSON": b"{customer_key: 1}",
    "truncated": b'{"customer_key": "cust-6d11ca90", "amount": ',
    "a list": b"[1, 2, 3]",
    "a string": b'"usage"',
    "null": b"null",
    "duplicate keys": b'{"customer_key": "a", "customer_key": "b", "feature_key": "api_calls"}',
    "invalid UTF-8": b'{"customer_key": "\xff\xfe"}',
    "lone surrogate": b'{"customer_key": "\\ud800", "feature_key": "api_calls"}',
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "huge": b'{"customer_key": "' + b"x" * (1024 * 1024 + 10) + b'"}',
    "NaN literal": b'{"customer_key": "cust-6d11ca90", "feature_key": "api_calls", "amount": NaN}',
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize(
    "path", ["/api/v1/usage", "/api/v1/usage/batch", "/metrifox/meter/usage/events"]
)
def test_malformed_and_huge_json_is_a_4xx_and_writes_nothing(client, catalog, case, path):
    key = make_key("admin")
    before = row_counts()
    response = _post(client, path, MALFORMED[case], key)
    _assert_refused_and_nothing_written(response, before)


def test_a_body_that_is_not_json_is_refused(client, catalog):
    key = make_key("admin")
    before = row_counts()
    for path in ("/api/v1/usage", "/api/v1/wallets/topups"):
        response = _post(client, path, b"customer_key=x", key, "application/x-www-form-urlencoded")
        _assert_refused_and_nothing_written(response, before)


# ---------------------------------------------------------------- generated bodies

TEXT = st.text(max_size=40) | st.sampled_from([C, "api_calls", "seats", "sso", "api.call", ""])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**25), max_value=10**25)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=False, allow_infinity=False).map(str)
    | TEXT
    | st.sampled_from(["1e400", "-0", "0.0000001", "1.000001", "2026-01-01T00:00:00Z"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def _bodies(fields: tuple[str, ...], amount: str) -> st.SearchStrategy[dict]:
    known = st.fixed_dictionaries(
        {},
        optional={
            "customer_key": st.just(C) | TEXT | JSON_VALUES,
            "feature_key": st.sampled_from(["api_calls", "seats", "sso", "candidates"]) | TEXT,
            amount: st.integers(-3, 3) | SCALARS,
            "event_id": st.text(max_size=300) | JSON_VALUES,
            "timestamp": SCALARS | st.integers(0, 2**63),
            "metadata": JSON_VALUES | st.dictionaries(TEXT, st.text(max_size=2000), max_size=4),
        },
    )
    extra = st.dictionaries(st.text(min_size=1, max_size=10), JSON_VALUES, max_size=2)
    return st.tuples(known, extra).map(lambda pair: {**pair[1], **pair[0]})


def _check_generated(client, key: str, path: str, body: dict) -> None:
    before = row_counts()
    response = _post(client, path, json.dumps(body, allow_nan=True).encode(), key)
    status = response.status_code
    assert status < 500, (status, body, response.get_data()[:300])
    assert response.mimetype == "application/json"
    if status >= 400:
        assert row_counts() == before, body


SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.slow
def test_generated_usage_bodies_never_give_a_5xx_or_a_partial_write(client, catalog):
    key = make_key("admin")

    @SETTINGS
    @given(body=_bodies(USAGE_FIELDS + ("metadata",), "amount"))
    def run(body: dict) -> None:
        _check_generated(client, key, "/api/v1/usage", body)

    run()


@pytest.mark.slow
def test_generated_metrifox_bodies_never_give_a_5xx_or_a_partial_write(client, catalog):
    key = make_key("admin")

    @SETTINGS
    @given(body=_bodies(METER_FIELDS + ("metadata",), "quantity"))
    def run(body: dict) -> None:
        if isinstance(body.get("timestamp"), float) and not math.isfinite(body["timestamp"]):
            body["timestamp"] = str(body["timestamp"])
        _check_generated(client, key, "/metrifox/meter/usage/events", body)

    run()


@pytest.mark.slow
def test_generated_batches_never_give_a_5xx_or_a_partial_write(client, catalog):
    key = make_key("admin")

    @SETTINGS
    @given(events=st.lists(_bodies(USAGE_FIELDS, "amount"), max_size=4))
    def run(events: list[dict]) -> None:
        _check_generated(client, key, "/api/v1/usage/batch", {"events": events})

    run()


def test_unix_millisecond_timestamps_far_away_are_refused_by_the_metrifox_door(client, catalog):
    key = make_key("admin")
    before = row_counts()
    now_ms = int(time.time() * 1000)
    for ts in (0, now_ms - 10 * 365 * 86_400_000, now_ms + 10 * 365 * 86_400_000, 2**70, -1):
        body = {"customer_key": C, "feature_key": "api_calls", "quantity": 1, "timestamp": ts}
        response = _post(client, "/metrifox/meter/usage/events", _encode(body), key)
        _assert_refused_and_nothing_written(response, before)


# ---------------------------------------------------------------- framing, encodings, body rules

BODY_DOORS = ["/api/v1/usage", "/api/v1/usage/batch", "/metrifox/meter/usage/events"]
MIB = 1024 * 1024


def _good_body(path: str) -> dict:
    event = {**GOOD, "event_id": "framing-1"}
    if path.startswith("/metrifox"):
        event = {"customer_key": C, "feature_key": "api_calls", "quantity": 1}
    return {"events": [event]} if path.endswith("/batch") else event


@pytest.mark.parametrize("path", BODY_DOORS)
def test_a_chunked_body_over_the_limit_is_refused_not_cut_short(client, catalog, path):
    # Valid JSON for its first MiB (an event and blanks), garbage after: cut at the limit it
    # would be recorded. Without a Content-Length the server must read on and refuse it whole.
    raw = json.dumps(_good_body(path)).encode() + b" " * MIB + b"not json"
    key = make_key("admin")
    before = row_counts()
    response = client.post(
        path,
        input_stream=io.BytesIO(raw),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413 and response.get_json()["error"]["code"] == (
        "payload_too_large"
    )
    assert row_counts() == before


@pytest.mark.parametrize("path", BODY_DOORS)
def test_a_chunked_body_within_the_limit_is_read_whole(client, catalog, path):
    raw = json.dumps(_good_body(path)).encode()
    response = client.post(
        path,
        input_stream=io.BytesIO(raw),
        content_type="application/json",
        headers={"Authorization": f"Bearer {make_key('admin')}"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code in (200, 201), response.get_json()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-32-be", "latin-1"])
@pytest.mark.parametrize("path", BODY_DOORS)
def test_a_body_that_is_not_utf8_is_malformed_json(client, catalog, path, encoding):
    body = {**_good_body(path), "customer_key": C} if "batch" not in path else _good_body(path)
    raw = json.dumps(body, ensure_ascii=False).replace(C, C + "é").encode(encoding)
    key = make_key("admin")
    before = row_counts()
    response = _post(client, path, raw, key)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "malformed_json"
    assert row_counts() == before


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'{"customer_key": "x", "customer_key": "' + C.encode() + b'", "quantity": 1}', None),
        (json.dumps({"customer_key": C, "feature_key": "api_calls"}).encode(), "text/plain"),
        (json.dumps({"customer_key": C, "feature_key": "api_calls"}).encode(), "form"),
    ],
    ids=["duplicate keys", "text/plain", "form"],
)
def test_the_metrifox_door_has_the_same_body_rules_as_the_api(client, catalog, raw, content_type):
    if content_type == "form":
        content_type = "application/x-www-form-urlencoded"
    raw = raw.replace(b'"quantity": 1}', b'"feature_key": "api_calls", "quantity": 1}')
    key = make_key("admin")
    before = row_counts()
    response = _post(
        client,
        "/metrifox/meter/usage/events",
        raw,
        key,
        content_type or "application/json",
    )
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "malformed_json"
    assert row_counts() == before


@given(name=st.text(min_size=1, max_size=8).map(lambda s: s + "\ud800"))
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_unknown_field_names_with_lone_surrogates_are_a_clean_422(client, catalog, name):
    key = make_key("admin")
    raw = json.dumps({**GOOD, name: 1}).encode()  # ensure_ascii: "\ud800" travels as an escape
    response = _post(client, "/api/v1/usage", raw, key)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error" and error["details"]["field"]
    # In a batch the error is echoed inside a 200 answer.
    response = _post(
        client, "/api/v1/usage/batch", json.dumps({"events": [{name: 1}]}).encode(), key
    )
    assert response.status_code == 200
    [result] = response.get_json()["results"]
    assert result["status"] == 422 and result["body"]["error"]["details"]["field"]


def test_amount_null_on_usage_means_not_given(client, catalog):
    key = make_key("admin")
    response = _post(client, "/api/v1/usage", _encode({**GOOD, "amount": None}), key)
    assert response.status_code == 201 and response.get_json()["amount"] == 1
    batch = {"events": [{**GOOD, "amount": None, "event_id": "null-amount-2"}]}
    response = _post(client, "/api/v1/usage/batch", _encode(batch), key)
    [result] = response.get_json()["results"]
    assert result["status"] == 201 and result["body"]["amount"] == 1


# ---------------------------------------------------------------- integers in URLs and cursors

HUGE = "9" * 20


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD_INTEGERS = [
    HUGE,
    "-" + HUGE,
    "²",
    "٣",
    "1_0",
    " ",
    "0x10",
    "1e3",
    str(2**63),
]


@pytest.mark.parametrize("value", BAD_INTEGERS)
def test_out_of_range_and_unicode_integers_in_api_urls_are_a_422(client, catalog, value):
    key = make_key("admin")
    urls = [
        f"/api/v1/customers?limit={value}",
        f"/api/v1/customers?cursor={_cursor('v1:' + value)}",
        f"/api/v1/customers/{C}/events?cursor={_cursor('v1:' + value)}",
        f"/api/v1/customers/{C}/ledger?limit={value}",
        f"/metrifox/api/v1/customers?page={value}",
        f"/metrifox/api/v1/customers?per_page={value}",
        f"/metrifox/meter/usage/events?page={value}",
    ]
    for url in urls:
        response = client.get(url, headers={"x-api-key": key, "Authorization": f"Bearer {key}"})
        assert response.status_code == 422, (url, response.status_code)
        assert response.get_json()["error"]["code"] == "validation_error"


@given(number=st.integers(min_value=-(2**80), max_value=2**80))
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_any_integer_in_a_cursor_is_a_page_or_a_422(client, catalog, number):
    key = make_key("admin")
    response = client.get(
        f"/api/v1/customers/{C}/events?cursor={_cursor(f'v1:{number}')}",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == (200 if 1 <= number < 2**63 else 422)


@pytest.mark.parametrize("value", BAD_INTEGERS)
def test_out_of_range_integers_on_dashboard_lists_are_a_4xx_page(client, catalog, value):
    from tests.web import signed_in

    signed_in(client, "admin")
    for url in (
        f"/customers?page={value}",
        f"/audit?before={value}",
        f"/customers/{C}/events?cursor={_cursor('v1:' + value)}",
        f"/customers/{C}/ledger?cursor={_cursor('v1:' + value)}",
    ):
        response = client.get(url)
        assert 400 <= response.status_code < 500, (url, response.status_code)
