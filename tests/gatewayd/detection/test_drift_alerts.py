"""Drift alerts an operator can read (gatewayd/detection/drift_alerts.py): one open per device
naming every feature that moved, updated rather than repeated, closed after quiet windows or by a
new model, held off after closing, continued after a restart; and through the detection stage,
one alert and one retraining for a burst of changes, closed when the retrained bundle loads."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from gatewayd.detection.drift_alerts import DriftAlerts
from gatewayd.store.faults import StoreFault
from tests.store_fake import RecordingStore


class FakeStore(RecordingStore):
    def __init__(self, open_alerts=None, details=None):
        super().__init__(
            {
                "open_alerts": open_alerts or [],
                "alerts": lambda *a, **k: [{"id": i, "detail": d} for i, d in self.details.items()],
            },
            fail=lambda name: (
                StoreFault("io", "disk gone") if name in ("open_alerts", "alerts") and self.fail_reads else None
            ),
        )
        self.details = details or {}
        self.fail_reads = False


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make(store=None, **kwargs):
    store = store or FakeStore()
    published: list[dict] = []
    clock = Clock()
    alerts = DriftAlerts(
        "g",
        store,
        lambda alert: published.append(alert.message()),
        clock=clock,
        **{"holdoff_s": 3600.0, "quiet_windows": 5, **kwargs},
    )
    return alerts, store, published, clock


def run(coro):
    return asyncio.run(coro)


def test_a_burst_of_changes_on_one_device_is_one_alert_naming_every_feature(caplog):
    alerts, store, published, _ = make()

    async def burst():
        opened = await alerts.window("pump-1", 10_000, ["score up", "pressure:mean up"], "pump-1 v1")
        again = await alerts.window("pump-1", 15_000, ["flow:mean down"], "pump-1 v1")
        same = await alerts.window("pump-1", 20_000, ["pressure:mean up", "temperature:mean up"], "pump-1 v1")
        return opened, again, same

    with caplog.at_level(logging.INFO, logger="gatewayd.detection"):
        opened, again, same = run(burst())
    assert opened == "score up, pressure:mean up" and again is None and same is None  # one retraining at most
    records = store.named("record_alert")
    assert len(records) == 1
    alert_id, device, channels, severity, kind, opened_ms, detail = records[0][1]
    assert (alert_id, device, severity, kind, opened_ms) == ("g:pump-1:drift:10000", "pump-1", "info", "drift", 10_000)
    assert channels == ["pressure"]  # "score" is no channel
    assert detail["changes"] == [["score", "up"], ["pressure:mean", "up"]]
    updates = store.named("update_alert")
    assert [u[1] for u in updates] == [("g:pump-1:drift:10000",)] * 2 and not any("closed_ms" in u[2] for u in updates)
    last = updates[-1][2]["detail"]
    assert last["changes"] == [
        ["score", "up"],
        ["pressure:mean", "up"],
        ["flow:mean", "down"],
        ["temperature:mean", "up"],
    ]
    assert last["channels"] == ["pressure", "flow", "temperature"] and last["events"] == 5
    assert alerts.open["pump-1"].id == "g:pump-1:drift:10000"
    assert [p.get("update", False) for p in published] == [False, True, True]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "score up, pressure:mean up" in warnings[0].getMessage()


def test_it_closes_after_quiet_windows_and_a_new_change_restarts_the_count():
    alerts, store, published, _ = make(quiet_windows=5)

    async def scenario():
        await alerts.window("pump-1", 0, ["flow:mean up"])
        for k in range(1, 5):  # four quiet windows
            await alerts.window("pump-1", k * 5000, [])
        await alerts.window("pump-1", 25_000, ["flow:mean down"])  # the count starts again
        for k in range(6, 10):
            await alerts.window("pump-1", k * 5000, [])
        assert "pump-1" in alerts.open, "four quiet windows since the last change: still open"
        await alerts.window("pump-1", 50_000, [])

    run(scenario())
    assert "pump-1" not in alerts.open
    closes = [c for c in store.named("update_alert") if c[2].get("closed_ms") is not None]
    assert len(closes) == 1 and closes[0][1] == ("g:pump-1:drift:0",) and closes[0][2]["closed_ms"] == 50_000
    assert closes[0][2]["detail"]["closed"] == "no new drift for 5 windows"
    assert closes[0][2]["detail"]["changes"] == [["flow:mean", "up"], ["flow:mean", "down"]]
    assert published[-1]["closed_ms"] == 50_000 and published[-1]["detail"]["closed"].startswith("no new drift")


def test_no_new_alert_in_the_hold_off_after_a_close(caplog):
    alerts, store, _, clock = make(quiet_windows=2, holdoff_s=3600.0)

    async def scenario():
        await alerts.window("pump-1", 0, ["flow:mean up"])
        await alerts.window("pump-1", 5000, [])
        await alerts.window("pump-1", 10_000, [])  # closed
        clock.t += 3599
        first = await alerts.window("pump-1", 15_000, ["pressure:mean up"])
        second = await alerts.window("pump-1", 20_000, ["score up", "flow:mean down"])
        assert first is None and second is None and "pump-1" not in alerts.open
        clock.t += 2  # the hold-off is over
        return await alerts.window("pump-1", 25_000, ["temperature:mean down"])

    with caplog.at_level(logging.INFO, logger="gatewayd.detection"):
        opened = run(scenario())
    assert opened == "temperature:mean down"
    records = store.named("record_alert")
    assert [r[1][0] for r in records] == ["g:pump-1:drift:0", "g:pump-1:drift:25000"]
    assert records[1][1][6]["held_off"] == 3  # the changes of the hold-off, counted
    assert alerts.held_off_total == 3
    held = [r for r in caplog.records if "hold-off" in r.getMessage()]
    assert len(held) == 1 and held[0].levelno == logging.INFO  # logged once, not alerted


def test_a_second_device_is_independent():
    alerts, store, _, clock = make(quiet_windows=2)

    async def scenario():
        await alerts.window("pump-1", 0, ["flow:mean up"])
        a = await alerts.window("pump-2", 0, ["flow:mean up"])  # pump-1's open alert is not pump-2's
        await alerts.window("pump-1", 5000, [])
        await alerts.window("pump-1", 10_000, [])  # pump-1 closes; pump-2 saw no window: still open
        assert "pump-2" in alerts.open and "pump-1" not in alerts.open
        clock.t += 10
        b = await alerts.window("pump-3", 15_000, ["score down"])  # pump-1's hold-off is not pump-3's
        c = await alerts.window("pump-1", 15_000, ["score down"])  # but is pump-1's
        return a, b, c

    a, b, c = run(scenario())
    assert a is not None and b is not None and c is None
    assert [r[1][0] for r in store.named("record_alert")] == [
        "g:pump-1:drift:0",
        "g:pump-2:drift:0",
        "g:pump-3:drift:15000",
    ]
    assert store.named("record_alert")[2][1][2] == []  # only the score moved: no channel


def test_a_newer_model_closes_it_and_a_rollback_or_the_first_load_does_not():
    alerts, store, _, _ = make()

    async def scenario():
        await alerts.model_loaded(["pump-1", "pump-2"], 3, "pumps v3")  # the first load of this run
        await alerts.window("pump-1", 0, ["flow:mean up"])
        await alerts.window("pump-1", 5000, [])
        await alerts.model_loaded(["pump-1", "pump-2"], 2, "pumps v2")  # a rollback
        assert "pump-1" in alerts.open
        await alerts.model_loaded(["pump-1", "pump-2"], 4, "pumps v4")

    run(scenario())
    assert "pump-1" not in alerts.open
    closes = [c for c in store.named("update_alert") if c[2].get("closed_ms") is not None]
    assert len(closes) == 1 and closes[0][2]["closed_ms"] == 5000
    assert closes[0][2]["detail"]["closed"] == "a new model took over: pumps v4"


def test_alerts_left_open_by_a_previous_run_are_continued_not_duplicated():
    # An older gateway: one open alert per feature, never closed; the newest window's burst is one alert.
    rows = [
        {
            "id": "g:pump-1:drift:1000:flow:mean",
            "device": "pump-1",
            "channels": [],
            "severity": "info",
            "opened_ms": 1000,
        },
        {
            "id": "g:pump-1:drift:9000:pressure:mean",
            "device": "pump-1",
            "channels": [],
            "severity": "info",
            "opened_ms": 9000,
        },
        {"id": "g:pump-1:drift:9000:score", "device": "pump-1", "channels": [], "severity": "info", "opened_ms": 9000},
        {"id": "g:pump-2:drift:4000", "device": "pump-2", "channels": ["flow"], "severity": "info", "opened_ms": 4000},
    ]
    details = {
        "g:pump-1:drift:1000:flow:mean": {"source": "drift", "change": "flow:mean up"},
        "g:pump-1:drift:9000:pressure:mean": {"source": "drift", "change": "pressure:mean down"},
        "g:pump-1:drift:9000:score": {"source": "drift", "change": "score up"},
        "g:pump-2:drift:4000": {"source": "drift", "changes": [["flow:mean", "up"]], "events": 1},
    }
    alerts, store, _, _ = make(FakeStore(rows, details), quiet_windows=3)

    async def scenario():
        await alerts.load()
        assert set(alerts.open) == {"pump-1", "pump-2"}
        opened = await alerts.window("pump-2", 20_000, ["pressure:mean up"])  # goes on under its id
        for k in range(3):
            await alerts.window("pump-1", 20_000 + k * 5000, [])
        return opened

    assert run(scenario()) is None
    assert not store.named("record_alert"), "no new alert for a drift already open"
    updates = store.named("update_alert")
    superseded = [u for u in updates if u[2]["detail"].get("closed", "").startswith("superseded")]
    assert sorted(u[1][0] for u in superseded) == ["g:pump-1:drift:1000:flow:mean", "g:pump-1:drift:9000:pressure:mean"]
    assert all(u[2]["closed_ms"] == 9000 for u in superseded)
    assert superseded[0][2]["detail"]["change"] in ("flow:mean up", "pressure:mean down")  # its detail kept
    pump2 = [u for u in updates if u[1] == ("g:pump-2:drift:4000",)]
    assert pump2[-1][2]["detail"]["changes"] == [["flow:mean", "up"], ["pressure:mean", "up"]]
    closed = [u for u in updates if u[1] == ("g:pump-1:drift:9000:score",)]
    assert len(closed) == 1 and closed[0][2]["closed_ms"] == 30_000
    assert closed[0][2]["detail"]["changes"] == [["pressure:mean", "down"], ["score", "up"]]  # the burst, folded
    assert closed[0][2]["detail"]["continued"] is True


def test_a_degraded_store_at_start_is_read_later_and_the_stored_alert_superseded():
    rows = [{"id": "g:pump-1:drift:1000", "device": "pump-1", "channels": [], "severity": "info", "opened_ms": 1000}]
    store = FakeStore(rows, {"g:pump-1:drift:1000": {"source": "drift", "changes": [["score", "up"]]}})
    store.fail_reads = True
    alerts, _, _, _ = make(store)

    async def scenario():
        await alerts.load()
        assert not alerts.loaded
        await alerts.window("pump-1", 5000, [])  # not tried again at every window
        assert len(store.named("open_alerts")) == 1
        store.fail_reads = False
        await alerts.window("pump-1", 10_000, ["flow:mean up"])  # a change: read first

    run(scenario())
    assert alerts.loaded and alerts.open["pump-1"].id == "g:pump-1:drift:1000"
    assert not store.named("record_alert")


@pytest.fixture
def stage_with_bundle(tmp_path):
    from gatewayd.config import parse_config
    from gatewayd.detection.stage import DetectionStage

    config = parse_config(
        f'[gateway]\nname = "g"\nstate_dir = "{tmp_path / "state"}"\n'
        "[detection]\nretrain_on_drift = true\nhealth_max_alert_rate = 1.0\n"
        '[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\n'
    )
    store = FakeStore()
    published: list[dict] = []
    stage = DetectionStage(config, store, lambda alert: published.append(alert.message()))
    return stage, store, published, tmp_path


def install(stage, tmp_path, version: int, seed: int) -> None:
    from gatewayd.detection.features import FeatureSpec
    from gatewayd.models.bundle import load_private_key, write_bundle
    from gatewayd.models.training import train_bundle

    spec = FeatureSpec(("flow", "pressure"), window_s=10.0, hop_s=5.0, stats=("mean",))
    x = np.random.default_rng(seed).normal(size=(200, 2))
    trained = train_bundle(x, np.arange(200) * 5000, spec, name="pump-1", version=version, source="test", trees=20)
    assert stage.key_path is not None
    folder = write_bundle(tmp_path / f"v{version}", trained.manifest, trained.files, load_private_key(stage.key_path))
    stage.models.install(folder)


def test_through_the_stage_a_drift_burst_is_one_alert_one_retraining_closed_by_the_new_bundle(
    stage_with_bundle, caplog
):
    stage, store, published, tmp_path = stage_with_bundle
    install(stage, tmp_path, 1, seed=0)
    started: list[str] = []
    stage._start_training = lambda scope, reason: started.append(reason)  # type: ignore[method-assign]
    scope = stage.scopes["pump-1"]
    rng = np.random.default_rng(1)

    async def scenario():
        await stage.drift_alerts.load()
        await stage._load(scope)
        spec = stage.specs["pump-1"]
        for k in range(200):  # 60 windows to measure; then flow moves, later pressure too
            x = rng.normal(size=2) * 0.3 + np.array([3.0 if k >= 70 else 0.0, -3.0 if k >= 120 else 0.0])
            await stage._window("pump-1", k * 5000, x, spec)
        drift_records = [c for c in store.named("record_alert") if c[1][4] == "drift"]
        assert len(drift_records) == 1
        install(stage, tmp_path, 2, seed=2)
        await stage._load(scope)  # the new bundle closes it
        return drift_records[0]

    with caplog.at_level(logging.WARNING, logger="gatewayd.detection"):
        record = run(scenario())
    alert_id = record[1][0]
    assert alert_id.startswith("g:pump-1:drift:") and alert_id.count(":") == 3
    assert set(record[1][2]) <= {"flow", "pressure"}  # the channels of the features seen at its opening
    updates = [c for c in store.named("update_alert") if c[1] == (alert_id,)]
    final = updates[-1][2]
    assert final["closed_ms"] == 199 * 5000 and final["detail"]["closed"] == "a new model took over: pump-1 v2"
    features = {f for f, _ in final["detail"]["changes"]}
    assert {"flow:mean", "pressure:mean"} <= features, final["detail"]
    assert ["flow:mean", "up"] in final["detail"]["changes"] and ["pressure:mean", "down"] in final["detail"]["changes"]
    assert {"flow", "pressure"} == set(final["detail"]["channels"])
    assert len(started) == 1 and started[0].startswith("drift in ")  # one retraining, not one per feature
    assert stage.stats.drift_events >= 2
    drift_warnings = [r for r in caplog.records if "drift in" in r.getMessage()]
    assert len(drift_warnings) == 1
    assert [p for p in published if p["kind"] == "drift" and not p.get("update")] == [
        p for p in published if p.get("id") == alert_id and not p.get("update")
    ]
