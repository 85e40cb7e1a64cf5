"""The endpoint's boundary, against the live server: every input validated and answered, retries
recognised before decoding, back-pressure with Retry-After, tokens without a restart, and an
OpenAPI document that says what docs/cloud-api.md says."""

import gzip
import json
import re
import threading
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cloud_sync.server
from cloud_sync.cli import main
from cloud_sync.records import PAYLOADS, parse_batch
from cloud_sync.server import BackgroundEndpoint, Limits
from tests.faults.support import wait_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "cloud-api.md"
ALERT = {
    "id": "gw:pump-1:flow:5",
    "device": "pump-1",
    "channels": ["flow"],
    "severity": "warning",
    "kind": "edge",
    "opened_ms": 5,
    "detail": {},
}


@pytest.fixture
def endpoint(tmp_path):
    ep = BackgroundEndpoint(tmp_path / "cloud")
    yield ep
    ep.stop()


def session_for(ep, gateway="gw"):
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {ep.tokens.issue(gateway)}"
    return s


def post(session, ep, body, batch_id="b:1", gz=True, **headers):
    data = gzip.compress(body, mtime=0) if gz else body
    extra = {"Content-Encoding": "gzip"} if gz else {}
    return session.post(
        f"{ep.url}/v1/batches", data=data, headers={"Idempotency-Key": batch_id, **extra, **headers}, timeout=10
    )


def batch(*records):
    return json.dumps({"gateway": "gw", "records": list(records)}).encode()


def alert(key="outbox:1", **changes):
    return {"key": key, "kind": "alert", "payload": {**ALERT, **changes}}


def test_inputs_that_once_dropped_the_connection_or_slipped_through_are_answered(endpoint):
    s = session_for(endpoint)
    nested = b'{"records": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert len(nested) < 2100
    r = post(s, endpoint, nested, "b:nested", gz=False)
    assert r.status_code == 400 and "nested" in r.json()["error"]
    r = post(s, endpoint, batch({"key": "outbox:9", "kind": "alert", "payload": {"id": "x"}}), "b:thin")
    assert r.status_code == 400 and "device" in r.json()["error"]
    r = post(s, endpoint, batch({"key": "k", "kind": "no-such-kind", "payload": {}}), "b:kind")
    assert r.status_code == 400
    truncated = gzip.compress(batch(alert()), mtime=0)[:-8]
    r = s.post(
        f"{endpoint.url}/v1/batches",
        data=truncated,
        headers={"Idempotency-Key": "b:cut", "Content-Encoding": "gzip"},
        timeout=10,
    )
    assert r.status_code == 400 and "truncated" in r.json()["error"]
    bomb = gzip.compress(b" " * (65 << 20), 9, mtime=0)  # 64 KB that inflates past the cap
    r = s.post(
        f"{endpoint.url}/v1/batches", data=bomb, headers={"Idempotency-Key": "b:bomb", "Content-Encoding": "gzip"}
    )
    assert r.status_code == 413
    # a body without Content-Length (chunked) is read, within the same cap
    r = s.post(
        f"{endpoint.url}/v1/batches", data=iter([batch(alert("outbox:2"))]), headers={"Idempotency-Key": "b:chunked"}
    )
    assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicate": False}
    assert [r["key"] for r in endpoint.storage.records("gw")] == ["outbox:2"]  # nothing of the refused ones


def test_a_reused_batch_id_with_other_records_is_refused_and_nothing_of_it_kept(endpoint):
    s = session_for(endpoint)
    assert post(s, endpoint, batch(alert())).json() == {"accepted": 1, "duplicate": False}
    other = batch(alert(severity="critical"), alert("outbox:7"))
    r = post(s, endpoint, other)
    assert r.status_code == 409
    records = endpoint.storage.records("gw")
    assert [r["key"] for r in records] == ["outbox:1"] and records[0]["payload"]["severity"] == "warning"
    # the same records sent again, even serialized differently, are a retry
    respaced = json.dumps({"records": [alert()]}, indent=2).encode()
    assert post(s, endpoint, respaced, gz=False).json() == {"accepted": 0, "duplicate": True}


def test_a_retry_is_answered_before_its_body_is_decoded(endpoint, monkeypatch):
    s = session_for(endpoint)
    body = batch(alert(), alert("outbox:2"))
    assert post(s, endpoint, body).json()["accepted"] == 2
    decoded = []
    monkeypatch.setattr(cloud_sync.server, "parse_batch", lambda raw: decoded.append(raw) or parse_batch(raw))
    assert post(s, endpoint, body).json() == {"accepted": 0, "duplicate": True}
    assert decoded == []


class BodyReads:
    """ASGI middleware that notes which batch ids the server has begun to read the body of: an
    upload is counted against its gateway and holds a slot by then (the check comes first)."""

    def __init__(self):
        self.begun: dict[str, threading.Event] = {}

    def event(self, batch_id):
        return self.begun.setdefault(batch_id, threading.Event())

    def __call__(self, app):
        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            batch_id = dict(scope["headers"]).get(b"idempotency-key", b"").decode()

            async def noting_receive():
                self.event(batch_id).set()
                return await receive()

            return await app(scope, noting_receive, send)

        return wrapped


def test_saturation_answers_429_and_503_with_retry_after(tmp_path):
    reads = BodyReads()
    ep = BackgroundEndpoint(
        tmp_path / "cloud", limits=Limits(max_inflight=2, per_gateway=1, retry_after_s=1.0), wrap=reads
    )
    release = threading.Event()

    def trickle(records):
        yield records[:10]
        release.wait(20)
        yield records[10:]

    answers = {}
    sessions = {g: session_for(ep, g) for g in ("gw", "gw-2", "gw-3")}

    def slow_upload(gateway, key):
        answers[gateway] = sessions[gateway].post(
            f"{ep.url}/v1/batches", data=trickle(batch(alert(key))), headers={"Idempotency-Key": f"b:{gateway}"}
        )

    try:
        first = threading.Thread(target=slow_upload, args=("gw", "outbox:1"))
        first.start()
        # nothing else is sent until the server holds the slow upload, or the two would race for the one place
        assert reads.event("b:gw").wait(10)
        r = post(sessions["gw"], ep, batch(alert("outbox:3")), "b:x")
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 2
        second = threading.Thread(target=slow_upload, args=("gw-2", "outbox:2"))
        second.start()
        assert reads.event("b:gw-2").wait(10)
        r = post(sessions["gw-3"], ep, batch(alert("outbox:4")), "b:y")
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert not reads.event("b:y").is_set()  # refused before its body was read
        assert requests.get(f"{ep.url}/v1/health", timeout=5).json() == {"ok": True}  # still answers
        release.set()
        first.join(20)
        second.join(20)
        assert answers["gw"].status_code == answers["gw-2"].status_code == 200
        assert post(sessions["gw-3"], ep, batch(alert("outbox:4")), "b:y").status_code == 200
        assert sorted(r["key"] for g in ("gw", "gw-2", "gw-3") for r in ep.storage.records(g)) == [
            "outbox:1",
            "outbox:2",
            "outbox:4",
        ]
    finally:
        release.set()
        ep.stop()


def test_tokens_are_issued_and_revoked_while_the_server_runs(endpoint, tmp_path, capsys):
    data = str(tmp_path / "cloud")
    assert main(["token", "plant-9", "--data", data]) == 0
    token = capsys.readouterr().out.strip()
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    wait_for(
        "the new token accepted",
        lambda: s.get(f"{endpoint.url}/v1/models", timeout=5).status_code == 200,
        10,
        every_s=0.05,
    )
    assert main(["token", "--list", "--data", data]) == 0
    assert "plant-9" in capsys.readouterr().out
    assert main(["token", "plant-9", "--revoke", "--data", data]) == 0
    wait_for(
        "the revoked token refused",
        lambda: s.get(f"{endpoint.url}/v1/models", timeout=5).status_code == 401,
        10,
        every_s=0.05,
    )
    assert main(["token", "not a name!", "--data", data]) == 2


def test_tokens_of_the_file_an_earlier_version_kept_still_work(tmp_path):
    from cloud_sync.tokens import digest

    (tmp_path / "cloud").mkdir()
    (tmp_path / "cloud" / "tokens").write_text(f"old-gw {digest('the-old-token')}\n")
    ep = BackgroundEndpoint(tmp_path / "cloud")
    try:
        r = requests.get(f"{ep.url}/v1/models", headers={"Authorization": "Bearer the-old-token"}, timeout=5)
        assert r.status_code == 200
    finally:
        ep.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
records = st.fixed_dictionaries(
    {"key": st.text(max_size=30), "kind": st.sampled_from([*PAYLOADS, "x"]), "payload": json_values}
) | st.builds(lambda p: {"key": "outbox:1", "kind": "alert", "payload": p}, st.just(ALERT) | json_values)
bodies = (
    st.builds(lambda rs: json.dumps({"records": rs}).encode(), st.lists(records, max_size=5))
    | st.binary(max_size=300)
    | st.builds(lambda v: json.dumps(v).encode(), json_values)
)


@pytest.mark.integration
def test_fuzzed_uploads_are_answered_and_never_break_the_server(tmp_path_factory):
    ep = BackgroundEndpoint(tmp_path_factory.mktemp("fuzz") / "cloud")
    s = session_for(ep)
    seen: set[int] = set()

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, gz=st.booleans(), batch_id=st.sampled_from(["b:1", "b:2", "bad id", ""]))
    def upload(body, gz, batch_id):
        r = post(s, ep, body, batch_id, gz=gz)
        seen.add(r.status_code)
        assert r.status_code in (200, 400, 409), r.text
        assert isinstance(r.json(), dict)

    try:
        upload()
        assert requests.get(f"{ep.url}/v1/health", timeout=5).status_code == 200
        for record in ep.storage.records("gw"):  # whatever was stored is of its kind
            PAYLOADS[record["kind"]].model_validate(record["payload"])
    finally:
        ep.stop()
    assert {200, 400} <= seen


def test_the_openapi_document_says_what_the_api_page_says(endpoint):
    spec = requests.get(f"{endpoint.url}/openapi.json", timeout=5).json()
    doc = DOC.read_text()
    documented = {(m.lower(), p) for m, p in re.findall(r"^## (GET|POST) (\S+)", doc, re.MULTILINE)}
    served = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert served == documented
    # the error table of POST /v1/batches, against the responses the document declares
    table = {int(code) for code in re.findall(r"^\| `(\d{3})` \|", doc, re.MULTILINE)}
    declared = {int(c) for c in spec["paths"]["/v1/batches"]["post"]["responses"]}
    assert declared == table | {200}
    # every record kind, and every payload field the endpoint requires, is on the page
    rows = dict(re.findall(r"^\| `(\w+)` \| `[^`]+` \| `\{([^`]*)\}`", doc, re.MULTILINE))
    mapping = spec["components"]["schemas"]["Batch"]["properties"]["records"]["items"]["discriminator"]["mapping"]
    assert set(mapping) == set(rows) == set(PAYLOADS)
    for kind, model in PAYLOADS.items():
        named = set(re.findall(r"\b(\w+)\b", rows[kind]))
        required = {name for name, field in model.model_fields.items() if field.is_required()}
        assert required <= named, (kind, required - named)
    headers = {p["name"].lower() for p in spec["paths"]["/v1/batches"]["post"]["parameters"]}
    assert {"idempotency-key", "content-encoding"} <= headers and "Idempotency-Key" in doc
