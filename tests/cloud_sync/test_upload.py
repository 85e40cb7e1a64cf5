"""cloud-sync uploads over real HTTP on loopback, through outages and faults: afterwards the
endpoint holds every record exactly once, and nothing was marked uploaded before a 2xx."""

import json
import socket
import threading
import time

import numpy as np
import pytest
import requests

from cloud_sync import codec
from cloud_sync.server import BackgroundEndpoint
from cloud_sync.uploader import STATE_FILE, Uploader, UploadState
from gatewayd import daemon_status
from gatewayd.alerts.alert import Alert
from gatewayd.store.database import Reading, Store
from tests.cloud_sync.faults import UploadFaults
from tests.gatewayd.test_daemon_status import sample

T0 = 1_794_999_960_000  # 2026-11-18, a whole minute


def free_port() -> int:
    """A port free now, for a test that must name it before its endpoint listens (others start
    the endpoint on port 0 and read `endpoint.port`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gateway_store(tmp_path):
    store = Store.in_state_dir(tmp_path / "gw")
    store.register_device("pump-1", "edge-node", "test", {}, [("flow", "m3/h"), ("pressure", "bar")])
    for minute in range(6):  # six minutes of 1 Hz readings
        store.write_readings(
            [
                Reading("pump-1", ch, T0 + minute * 60_000 + s * 1000, float(s))
                for s in range(60)
                for ch in ("flow", "pressure")
            ]
        )
    for i in range(30):
        store.record_alert(Alert(f"gw:pump-1:model:{i}", "pump-1", ["flow"], "warning", "model", T0 + i, {"i": i}))
    for i in range(5):
        store.label_alert(f"gw:pump-1:model:{i}", "true_positive", "ana")
    store.protect("pump-1", "flow", T0 + 60_000, T0 + 120_000)
    yield store
    store.close()


def expected_keys(store: Store) -> set[str]:
    outbox = {f"outbox:{i}" for (i,) in store.conn.execute("SELECT id FROM outbox WHERE kind IN ('alert', 'label')")}
    windows = {f"window:{i}" for (i,) in store.conn.execute("SELECT id FROM kept_windows")}
    summaries = {f"summary:{T0 + m * 60_000}" for m in range(6)}
    return outbox | windows | summaries


@pytest.fixture
def start_endpoint(tmp_path):
    """Start the reference endpoint over tmp_path/cloud (BackgroundEndpoint's keywords); each
    one started is stopped at the test's end."""
    started = []

    def start(**kwargs) -> BackgroundEndpoint:
        endpoint = BackgroundEndpoint(tmp_path / "cloud", **kwargs)
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


def uploader(store, tmp_path, url, token, **kwargs):
    return Uploader(
        store,
        tmp_path / STATE_FILE,
        url,
        token,
        gateway="gw",
        timeout_s=1.0,
        batch_records=7,
        now_ms=lambda: T0 + 10 * 60_000,
        **kwargs,
    )


def run_until_done(up, timeout_s=60):
    errors = []
    stop = threading.Event()

    def done():
        return stop.is_set() or not up.next_batch()

    thread = threading.Thread(target=lambda: up.run(done, interval_s=0.05, max_backoff_s=0.2, sleep=time.sleep))
    thread.start()
    thread.join(timeout_s)
    stop.set()
    thread.join(5)
    return errors


@pytest.mark.parametrize(
    "plan",
    [[], ["500", "500", "429", "reset-before", "reset-after", "slow", "500", "reset-after"]],
    ids=["clean", "faults"],
)
def test_every_record_arrives_exactly_once(gateway_store, tmp_path, start_endpoint, plan):
    faults = UploadFaults(plan)
    endpoint = start_endpoint(wrap=faults.wrap)
    up = uploader(gateway_store, tmp_path, endpoint.url, endpoint.tokens.issue("gw"))
    run_until_done(up)
    up.close()
    records = endpoint.storage.records("gw")
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys))
    assert set(keys) == expected_keys(gateway_store)
    assert faults.seen >= len(plan)
    by_key = {r["key"]: r for r in records}
    first_alert = min(k for k in keys if k.startswith("outbox:"))
    assert by_key[first_alert]["payload"]["severity"] == "warning"
    window = next(r for r in records if r["kind"] == "window")["payload"]
    block = codec.decode_window(window["block"])
    assert window["channel"] == "flow" and window["count"] == len(block) == 60
    assert block.ts_ms[0] == T0 + 60_000 and list(block.values) == [float(s) for s in range(60)]  # full resolution
    summary = codec.decode_summary(by_key[f"summary:{T0}"]["payload"]["devices"]["pump-1"])["flow"]
    assert summary["count"] == 60 and summary["mean"] == pytest.approx(29.5)
    assert summary["std"] == pytest.approx(np.std(np.arange(60)), rel=1e-3) and summary["max"] == pytest.approx(
        59, rel=1e-3
    )
    state = UploadState.load(tmp_path / STATE_FILE)
    assert state.records_total >= len(keys) and state.raw_readings_covered >= 6 * 120


DROPPED = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


@pytest.mark.parametrize(
    ("fault", "symptom", "stored"),
    [
        ("500", 500, False),
        ("429", 429, False),
        ("reset-before", DROPPED, False),
        ("reset-after", DROPPED, True),
        ("slow", requests.ReadTimeout, True),
    ],
)
def test_each_injected_fault_is_what_the_client_meets(start_endpoint, fault, symptom, stored):
    """The faults of the test above, as a client sees them: an error status, a connection that
    drops before or after the batch was kept, an answer later than the client waits. The same
    batch sent again tells whether the endpoint kept it."""
    endpoint = start_endpoint(wrap=UploadFaults([fault]).wrap)
    alert = {
        "id": "a",
        "device": "pump-1",
        "channels": ["flow"],
        "severity": "warning",
        "kind": "model",
        "opened_ms": T0,
    }
    body = json.dumps({"records": [{"key": "outbox:1", "kind": "alert", "payload": alert}]}).encode()
    headers = {"Authorization": f"Bearer {endpoint.tokens.issue('gw')}", "Idempotency-Key": "b1"}
    url = f"{endpoint.url}/v1/batches"
    if isinstance(symptom, int):
        answer = requests.post(url, data=body, headers=headers, timeout=1.0)
        assert answer.status_code == symptom and "error" in answer.json()
        assert answer.headers.get("Retry-After") == ("0.3" if fault == "429" else None)
    else:
        with pytest.raises(symptom):
            requests.post(url, data=body, headers=headers, timeout=1.0)
    again = requests.post(url, data=body, headers=headers, timeout=10)
    assert again.status_code == 200 and again.json() == {"accepted": 0 if stored else 1, "duplicate": stored}


def test_a_long_outage_is_caught_up_oldest_first(gateway_store, tmp_path, start_endpoint):
    port = free_port()  # the agent knows the endpoint's address before the endpoint is up
    up = uploader(gateway_store, tmp_path, f"http://127.0.0.1:{port}", "not-yet")
    failures = []
    for _ in range(20):  # the endpoint is away: every attempt fails, nothing is marked uploaded
        batch = up.next_batch()
        try:
            up.send(batch)
        except Exception as exc:  # noqa: BLE001
            failures.append(exc)
    assert len(failures) == 20 and UploadState.load(tmp_path / STATE_FILE).cursors == {}
    endpoint = start_endpoint(port=port)
    up.session.headers["Authorization"] = f"Bearer {endpoint.tokens.issue('gw')}"
    first = up.next_batch()
    assert [r.source for r in first][:1] == ["alerts"] and first[0].key == "outbox:1"  # oldest alert first
    run_until_done(up)
    up.close()
    keys = {r["key"] for r in endpoint.storage.records("gw")}
    assert keys == expected_keys(gateway_store)


def test_bad_token_is_refused_and_nothing_is_marked(gateway_store, tmp_path, start_endpoint):
    endpoint = start_endpoint()
    endpoint.tokens.issue("gw")
    up = uploader(gateway_store, tmp_path, endpoint.url, "wrong")
    with pytest.raises(Exception, match="401"):
        up.send(up.next_batch())
    up.close()
    assert UploadState.load(tmp_path / STATE_FILE).cursors == {}


def test_daily_budget_holds_routine_data_back_but_not_alerts(gateway_store, tmp_path):
    up = uploader(gateway_store, tmp_path, "http://127.0.0.1:9", "t", daily_budget_bytes=1)
    up.state.day = "2026-11-18"
    up.state.bytes_today = 10
    sources = {r.source for r in up.next_batch()}
    assert sources <= {"alerts", "windows"} and "alerts" in sources


def test_cloud_sync_run_refuses_a_world_readable_token_and_a_missing_section(tmp_path, capsys):
    import os

    from cloud_sync.cli import main

    token = tmp_path / "token"
    token.write_text("secret")
    os.chmod(token, 0o644)
    config = tmp_path / "gatewayd.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}"\n[cloud]\nurl = "http://127.0.0.1:9"\ntoken_file = "{token}"\n'
        '[[devices]]\nname = "d"\nhost = "127.0.0.1"\n'
    )
    assert main(["run", "--config", str(config)]) == 2
    assert "world-readable" in capsys.readouterr().err
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n[[devices]]\nname = "d"\nhost = "127.0.0.1"\n')
    assert main(["run", "--config", str(config)]) == 2
    assert "no [cloud] section" in capsys.readouterr().err


def test_https_with_a_configured_ca_and_refusal_without_it(gateway_store, tmp_path, start_endpoint):
    from tests.integration.test_mqtt_tls import make_pki

    make_pki(tmp_path)
    endpoint = start_endpoint(ssl=(tmp_path / "server.pem", tmp_path / "server.key"))
    assert endpoint.url.startswith("https://127.0.0.1:")
    token = endpoint.tokens.issue("gw")
    unknown_ca = Uploader(gateway_store, tmp_path / "a.json", endpoint.url, token, gateway="gw", timeout_s=2)
    with pytest.raises(Exception, match="SSL|certificate"):
        unknown_ca.send(unknown_ca.next_batch())
    unknown_ca.close()
    assert UploadState.load(tmp_path / "a.json").cursors == {}
    trusted = Uploader(
        gateway_store,
        tmp_path / "b.json",
        endpoint.url,
        token,
        gateway="gw",
        ca_file=str(tmp_path / "ca.pem"),
        timeout_s=2,
    )
    assert trusted.send(trusted.next_batch())["accepted"] > 0
    trusted.close()


def test_retrain_for_a_segment_of_gateways_publishes_for_each(tmp_path, capsys):
    from cloud_sync.cli import main
    from cloud_sync.storage import SqliteStorage
    from gatewayd.models.bundle import generate_keypair, load_public_key, verify
    from tests.cloud_sync.uploads import store_batch, summary_records

    storage = SqliteStorage(tmp_path / "cloud" / "cloud.sqlite3")
    for seed, gateway in enumerate(("gw-a", "gw-b")):
        alert = {
            "id": "x",
            "device": "pump-1",
            "channels": ["flow"],
            "severity": "warning",
            "kind": "model",
            "opened_ms": T0 + 600_000,
        }
        records = summary_records(["pump-1"], 40, seed=seed, start_ms=T0)
        records.append({"key": "outbox:1", "kind": "alert", "payload": alert})
        assert store_batch(storage, gateway, records) == len(records)
    storage.close()
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    assert (
        main(
            [
                "retrain",
                "--data",
                str(tmp_path / "cloud"),
                "--gateway",
                "gw-a",
                "--gateway",
                "gw-b",
                "--device",
                "pump-1",
                "--key",
                str(tmp_path / "k.pem"),
                "--trees",
                "20",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "minutes of 1 device(s)" in err and "near alerts left out" in err
    for gateway in ("gw-a", "gw-b"):
        manifest = verify(
            tmp_path / "cloud" / "bundles" / gateway / "pump-1" / "1", [load_public_key(tmp_path / "k.pub")]
        )
        assert (
            manifest.features["window_s"] == 60 and manifest.training["windows"] < 80
        )  # minutes near the alerts left out


def test_summaries_go_up_the_same_from_rows_and_from_summary_blocks(gateway_store, tmp_path):
    """Minutes that are over are merged into summary blocks; the uploader sends the same records."""
    up = Uploader(
        gateway_store, tmp_path / STATE_FILE, "http://127.0.0.1:9", "t", gateway="gw", now_ms=lambda: T0 + 3_600_000
    )

    def every_page() -> list:
        out, up.state.cursors["summaries"] = [], 0
        while batch := up._summaries(4):
            out += [(r.key, r.payload, r.readings) for r in batch]
            up.state.cursors["summaries"] = batch[-1].position
        return out

    before = every_page()
    later = T0 + 10 * 3_600_000
    assert gateway_store.compact_summaries(gateway_store.compactable_summaries(later), later) == 12
    assert every_page() == before and len(before) == 6
    up.close()


def test_device_health_goes_up_from_the_daemons_status_file_once_a_minute(gateway_store, tmp_path):
    status_path = tmp_path / "status.json"
    up = Uploader(
        gateway_store,
        tmp_path / STATE_FILE,
        "http://127.0.0.1:9",
        "t",
        gateway="gw",
        now_ms=lambda: T0 + 90_000,
        status_path=status_path,
    )
    assert up._health() == []  # no daemon has written its status yet
    daemon_status.write(status_path, sample())
    (record,) = up._health()
    assert record.key == f"health:{T0 + 60_000}"
    assert record.payload["devices"] == {
        "pump-1": {"state": "online", "consecutive_failures": 0, "last_error": None},
        "meter-2": {"state": "offline", "consecutive_failures": 7, "last_error": "timed out"},
    }
    up.state.cursors["health"] = record.position
    assert up._health() == []  # once a minute
