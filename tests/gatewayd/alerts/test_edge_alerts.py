"""Edge alerts: one per channel while the node reports it, escalated, closed, continued across
restarts, and never two open for one channel when the store could not answer at start."""

from gatewayd.acquisition.profiles.edge_node import EdgeEvent
from gatewayd.alerts.edge import EdgeAlerts
from gatewayd.store.faults import StoreFault
from tests.store_fake import RecordingStore


class Store(RecordingStore):
    """Answers open_alerts (failing the first `fail_first` times); records the writes."""

    def __init__(self, open_alerts, fail_first: int = 0):
        super().__init__({"open_alerts": open_alerts}, fail=self._fail)
        self.fail_left = fail_first

    def _fail(self, name):
        if name == "open_alerts" and self.fail_left:
            self.fail_left -= 1
            return StoreFault("disk_full", "the disk is full")
        return None

    @property
    def writes(self):
        return [c for c in self.calls if c[0] != "open_alerts"]


def event(severity):
    return [EdgeEvent("current", severity, ("high",) if severity else (), 25.0)]


async def test_open_escalate_close_and_a_restart_continues():
    published = []
    store = Store([])
    alerts = EdgeAlerts("site", store, lambda alert: published.append(alert.message()))
    await alerts.observe("pump-1", 1000, event("warning"))
    await alerts.observe("pump-1", 2000, event("critical"))
    await alerts.observe("pump-1", 3000, event(None))
    assert [c[0] for c in store.writes] == ["record_alert", "update_alert", "update_alert"]
    assert store.writes[1][2] == {
        "severity": "critical",
        "detail": {"checks": ["high"], "value": 25.0, "source": "node"},
    }
    assert store.writes[2] == ("update_alert", ("site:pump-1:current:1000",), {"closed_ms": 3000})
    assert [m.get("update", False) for m in published] == [False, True, True]
    # a restart while the condition holds: the stored alert goes on, nothing new is raised
    restarted = Store(
        [
            {
                "id": "site:pump-1:current:5000",
                "device": "pump-1",
                "channels": ["current"],
                "severity": "critical",
                "opened_ms": 5000,
            }
        ]
    )
    again = EdgeAlerts("site", restarted, lambda alert: published.append(alert.message()))
    await again.observe("pump-1", 9000, event("critical"))
    assert restarted.writes == []


async def test_an_alert_raised_while_the_store_could_not_answer_supersedes_the_stored_one():
    store = Store(
        [
            {
                "id": "site:pump-1:current:5000",
                "device": "pump-1",
                "channels": ["current"],
                "severity": "critical",
                "opened_ms": 5000,
            }
        ],
        fail_first=1,
    )
    alerts = EdgeAlerts("site", store, lambda alert: None)
    await alerts.observe("pump-1", 9000, event("critical"))  # the store is down: a new one is raised
    assert store.writes[0][0] == "record_alert"
    await alerts.observe("pump-1", 9500, event(None))  # the store answers now: the old one is closed
    closes = [c for c in store.writes if c[0] == "update_alert"]
    assert closes == [
        ("update_alert", ("site:pump-1:current:5000",), {"closed_ms": 9000}),
        ("update_alert", ("site:pump-1:current:9000",), {"closed_ms": 9500}),
    ]
