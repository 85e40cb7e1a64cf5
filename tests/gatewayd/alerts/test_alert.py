"""The one alert type: its id scheme (docs/mqtt.md), the messages it is published as, and the
same alert written twice (a write kept through a store outage) stored and queued once."""

import json

from gatewayd.alerts.alert import Alert, AlertChange, alert_id
from gatewayd.store.database import Store


def test_ids_follow_the_documented_scheme():
    edge = Alert.new(
        "plant-7", "pump-1", "current", kind="edge", severity="warning", opened_ms=5, channels=["current"], detail={}
    )
    assert edge.id == "plant-7:pump-1:current:5" == alert_id("plant-7", "pump-1", "current", 5)
    assert edge.channels == ("current",)  # a list given is kept as a tuple: the value cannot change


def test_an_opening_carries_everything_and_a_change_only_what_changed():
    alert = Alert("g:p:model:1", "p", ["a", "b"], "warning", "model", 1, {"ratio": 2.0})
    assert alert.message() == {
        "id": "g:p:model:1",
        "device": "p",
        "channels": ["a", "b"],
        "severity": "warning",
        "kind": "model",
        "opened_ms": 1,
        "detail": {"ratio": 2.0},
    }
    closed = AlertChange("g:p:model:1", "p", "model", closed_ms=9)
    assert closed.message() == {"id": "g:p:model:1", "device": "p", "kind": "model", "update": True, "closed_ms": 9}
    moved = AlertChange("g:p:drift:1", "p", "drift", channels=("a",), detail={"changes": []})
    assert moved.message()["channels"] == ["a"] and "severity" not in moved.message()


def test_the_same_alert_written_twice_is_stored_and_queued_once(tmp_path):
    store = Store.in_state_dir(tmp_path)
    try:
        alert = Alert("g:p:model:1", "p", ["a"], "critical", "model", 1, {"ratio": 3.0})
        store.record_alert(alert)
        store.record_alert(alert)
        store.update_alert(AlertChange(alert.id, "p", "model", closed_ms=7))
        assert [a["id"] for a in store.alerts()] == [alert.id] and store.alerts()[0]["closed_ms"] == 7
        queued = store.conn.execute("SELECT kind, payload FROM outbox ORDER BY id").fetchall()
        assert [k for k, _ in queued] == ["alert", "alert_update"]
        assert json.loads(queued[0][1]) == alert.message()
        assert json.loads(queued[1][1]) == {"id": alert.id, "severity": None, "closed_ms": 7, "detail": None}
    finally:
        store.close()
