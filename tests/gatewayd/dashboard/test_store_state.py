"""The store's and the clock's state on the dashboard, and a dashboard that outlives its store:
a store that cannot be opened or read leaves the page served (503 for what only the store
knows, the overview with what the running gateway knows), a command the store cannot take
answers 503, and the daemon keeps running."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gatewayd.alerts.alert import Alert
from gatewayd.dashboard import server, views
from gatewayd.demo.virtual_node import free_port
from gatewayd.store.database import DB_NAME, Store

from .support import QUIET_METER, call, daemon_task, eventually, quiet_meter, running_gateway

pytestmark = pytest.mark.integration

ALERT = "g:pump-1:model:1000"


def config(state: Path, extra: str = "", meter_port: int | None = None) -> str:
    """A gateway with one device, detection off: a quiet meter on `meter_port`, or else a device
    that does not answer (nothing listens there)."""
    device = (
        QUIET_METER.format(port=meter_port)
        if meter_port
        else f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {free_port()}\n'
    )
    return (
        f'[gateway]\nname = "g"\nstate_dir = "{state}"\n{extra}\n[detection]\nenabled = false\n'
        f"[dashboard]\nenabled = true\nport = {free_port()}\n{device}"
    )


async def wait_until(what: str, probe, timeout_s: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not (found := await probe()):
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        await asyncio.sleep(0.2)
    return found


def unreadable_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the store cannot be read now" in r.getMessage()]


async def test_the_overview_carries_the_store_and_the_clock_and_a_locked_store_refuses_a_command(tmp_path):
    state = tmp_path / "state"
    store = Store.in_state_dir(state)
    store.record_alert(Alert(ALERT, "pump-1", ["flow"], "warning", "model", 1000, {}))
    store.close()
    async with running_gateway(config(state, 'trust_clock = "always"')) as gateway:
        port = gateway.dashboard.port
        overview = (await call(port, "GET", "/api/overview")).json()
        section = overview["store"]
        assert {
            k: section[k]
            for k in (
                "state",
                "writing",
                "last_error",
                "read_error",
                "readings_dropped",
                "writes_waiting",
                "writes_dropped",
                "faults",
            )
        } == {
            "state": "ok",
            "writing": True,
            "last_error": None,
            "read_error": None,
            "readings_dropped": 0,
            "writes_waiting": 0,
            "writes_dropped": 0,
            "faults": 0,
        }
        # the disk use of every file of the store (as the daemon's worker counts it, with the WAL,
        # the shared memory and the reserve), against the budget; the reader's pages in use beside it
        assert section["disk_bytes"] == gateway.worker.disk_bytes() >= section["data_bytes"] > 0
        assert section["budget_bytes"] == gateway.status().store.budget_bytes
        assert section["path"] == str(state / DB_NAME) and section["evictions"] == {}
        assert overview["alerts"] == {"total": 1, "unacknowledged": 1, "unlabelled": 1}
        assert overview["clock"] == {"synchronized": True, "trust": "always", "steps": 0, "last_step_s": 0.0}

        # Another process holds the write lock (an operator's sqlite3 shell in a transaction):
        # the command waits out the busy timeout, is not applied, and says why.
        holder = sqlite3.connect(state / DB_NAME, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            refused = await call(port, "POST", "/api/command", {"command": "ack", "alert": ALERT})
            assert time.monotonic() - started < server.REQUEST_TIMEOUT_S
            assert refused.status == 503, refused.body
            assert refused.json() == {
                "error": "the store cannot take writes now, the command was not applied: the "
                f"database is locked by another process ({state / DB_NAME}: database "
                "is locked)"
            }
            section = (await call(port, "GET", "/api/overview")).json()["store"]
            assert section["state"] == "locked" and not section["writing"] and section["since_ms"] > 0
            assert section["read_error"] is None  # WAL readers are not locked out: what is stored is shown
            assert (await call(port, "GET", "/api/alerts")).status == 200
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await wait_until("the store to recover", lambda: _state_is(port, "ok"))
        done = await call(port, "POST", "/api/command", {"command": "ack", "alert": ALERT})
        assert done.json() == {"result": f"alert {ALERT} acknowledged"}


async def _state_is(port: int, state: str) -> bool:
    return (await call(port, "GET", "/api/overview")).json()["store"]["state"] == state


async def test_a_store_that_cannot_be_opened_leaves_the_dashboard_serving(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gatewayd.dashboard")
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the state directory's parent should be")
    state = blocked / "state"
    # The device answers and never alarms: no alert may wait for the store (that is another test's).
    async with quiet_meter() as meter, running_gateway(config(state, meter_port=meter)) as gateway:
        port = gateway.dashboard.port
        before = gateway.pollers["pump-1"].health.state
        reply = await call(port, "GET", "/api/overview")
        assert reply.status == 200
        overview = reply.json()
        (device,) = overview["devices"]
        assert device["name"] == "pump-1" and device["state"] in {before, gateway.pollers["pump-1"].health.state}
        section = overview["store"]
        assert section["state"] == "unavailable" and not section["writing"]
        assert section["last_error"] == f"cannot open the store ({state}: Not a directory)"
        read_error = f"cannot open the store ({state / DB_NAME}: unable to open database file)"
        assert section["read_error"] == read_error
        # what only the store knows is unknown (null), not zero; what the gateway knows is there
        assert section["data_bytes"] is None and section["evictions"] is None and overview["alerts"] is None
        assert overview["uplink"]["pending"] is None and overview["uplink"]["configured"] is False
        assert section["budget_bytes"] > 0 and section["disk_bytes"] == 0 and section["writes_waiting"] == 0
        assert set(overview["clock"]) == {"synchronized", "trust", "steps", "last_step_s"}

        unreadable = {"error": f"the store cannot be read now: {read_error}"}
        for path in ("/api/alerts", "/api/alerts?device=pump-1&unacknowledged=1", "/api/devices/pump-1/series"):
            reply = await call(port, "GET", path)
            assert (reply.status, reply.json()) == (503, unreadable), path
        reply = await call(port, "POST", "/api/command", {"command": "label", "alert": ALERT, "label": "true"})
        assert (reply.status, reply.json()) == (
            503,
            {
                "error": "the store cannot take writes now, the command was not "
                f"applied: cannot open the store ({state}: Not a "
                "directory)"
            },
        )
        assert len(unreadable_warnings(caplog)) == 1  # logged once, not at every request

        # The daemon goes on: its task runs, the writer and the poller turn.
        turned = asyncio.get_running_loop().time()
        await eventually(
            "the writer and every poller turning again",
            lambda: gateway.writer.heartbeat > turned and all(p.heartbeat > turned for p in gateway.pollers.values()),
        )
        assert not daemon_task().done()
        assert gateway.making_progress(asyncio.get_running_loop().time(), 2.0)

        # Once the directory can be created the store comes back, and the dashboard reads it again.
        blocked.unlink()
        await wait_until("the store to recover", lambda: _state_is(port, "ok"))
        reply = await wait_until("the alerts to be readable", lambda: _readable(port), server.READER_RETRY_S + 5)
        assert reply.json() == []
        overview = (await call(port, "GET", "/api/overview")).json()
        assert overview["store"]["read_error"] is None and overview["alerts"] == {
            "total": 0,
            "unacknowledged": 0,
            "unlabelled": 0,
        }
        assert any("the store can be read again" in r.getMessage() for r in caplog.records)
    assert len(unreadable_warnings(caplog)) == 1


async def _readable(port: int):  # type: ignore[no-untyped-def]
    reply = await call(port, "GET", "/api/alerts")
    return reply if reply.status == 200 else None


async def test_a_read_that_hangs_does_not_hold_up_the_page(tmp_path, monkeypatch, caplog):
    """A failing card can hold a read for minutes: the request that waits is answered 503 at
    the read's deadline, the next ones at once, and the overview with what the gateway knows."""
    monkeypatch.setattr(server, "READ_TIMEOUT_S", 0.5)
    release = threading.Event()

    def hung_alerts(*args):  # type: ignore[no-untyped-def]
        release.wait(30)
        return []

    monkeypatch.setattr(views, "alerts", hung_alerts)
    async with running_gateway(config(tmp_path / "state")) as gateway:
        port = gateway.dashboard.port
        try:
            started = time.monotonic()
            reply = await call(port, "GET", "/api/alerts")
            assert (reply.status, reply.json()) == (
                503,
                {"error": "the store cannot be read now: its disk has not answered a read within 0.5 s"},
            )
            assert time.monotonic() - started < 2.0
            await asyncio.sleep(0.2)  # the hung read is now past its deadline
            started = time.monotonic()
            reply = await call(port, "GET", "/api/overview")
            assert time.monotonic() - started < 0.5  # not queued behind the hung read
            overview = reply.json()
            assert reply.status == 200 and overview["devices"][0]["name"] == "pump-1"
            assert overview["store"]["state"] == "ok"  # the writer is not the one waiting
            assert overview["store"]["read_error"].startswith("its disk has not answered a read for ")
        finally:
            release.set()
        await wait_until("reads to be answered again", lambda: _overview_read(port))
    stalled = [r for r in caplog.records if "has not been answered within 0.5 s" in r.getMessage()]
    assert len(stalled) == 1  # logged once, not at every refused read


async def _overview_read(port: int) -> bool:
    return (await call(port, "GET", "/api/overview")).json()["store"]["read_error"] is None
