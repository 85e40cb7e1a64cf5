"""Alert identity across restarts: a node's condition that still holds when the daemon comes
back (after a kill -9 or a clean stop) continues its open alert under the same id, and one that
ended while the daemon was down is closed at the next start, never left open."""

from __future__ import annotations

import os
import signal

import pytest

from gatewayd.demo.virtual_node import VirtualNode
from tests.integration.test_mqtt import Subscriber

from .support import Daemon, stored, wait_for
from .test_daemon_disk import SETTINGS, edge_alert_on

pytestmark = pytest.mark.integration


def edge_alerts(db, channel: str) -> list[tuple]:
    return stored(
        db,
        "SELECT id, closed_ms FROM alerts WHERE kind = 'edge' AND channels = ? ORDER BY opened_ms",
        (f'["{channel}"]',),
    )


def test_an_ongoing_edge_alert_continues_across_restarts_and_closes_when_it_ends(tmp_path, mosquitto):
    with VirtualNode(unit=1, seed=31, period_ms=20, rig=True) as node:
        state = tmp_path / "state"
        db = state / "gatewayd.sqlite3"
        daemon = Daemon(tmp_path, state, [node], extra=SETTINGS.format(port=mosquitto.port)).start()
        sub = Subscriber(mosquitto.port, "gateway/site/alerts")
        try:
            wait_for("readings stored", lambda: daemon.written() > 100)
            node.drive(3, "offset", 20)
            first = edge_alert_on(sub, "current")["id"]
            wait_for("the alert stored", lambda: edge_alerts(db, "current"))
            os.kill(daemon.pid, signal.SIGKILL)  # a crash while the motor current is still too high
            daemon.process.wait()
            daemon.start()
            wait_for("polling after the restart", lambda: daemon.written() > 100)
            assert edge_alerts(db, "current") == [(first, None)], "the same alert goes on, none is raised anew"
            opened = [m for m in sub.messages if m[1].get("channels") == ["current"] and not m[1].get("update")]
            assert len(opened) == 1
            node.drive(3, "clear")
            wait_for(
                "the alert closed once the node reports the channel clear",
                lambda: edge_alerts(db, "current")[0][1] is not None,
            )
            # raised again, then the condition ends while the daemon is stopped
            node.drive(3, "offset", 20)
            wait_for("a second alert", lambda: len(edge_alerts(db, "current")) == 2)
            second = edge_alerts(db, "current")[1][0]
            assert second != first
            assert daemon.stop() == 0
            node.drive(3, "clear")
            daemon.start()
            wait_for("the second alert closed at the next start", lambda: edge_alerts(db, "current")[1][1] is not None)
            assert [a[0] for a in edge_alerts(db, "current")] == [first, second]
        finally:
            sub.close()
            assert daemon.stop() == 0, daemon.log()[-3000:]
