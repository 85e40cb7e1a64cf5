"""A device that goes offline raises one alert of kind `device`, closed when it is back;
continued across a restart while it is still down; and end to end, a daemon polling a port
where nothing listens raises it, stores it, and closes it once a virtual node answers there."""

import asyncio

from gatewayd import daemon
from gatewayd.acquisition.poller import DeviceHealth
from gatewayd.alerts.device import DeviceAlerts
from gatewayd.config import parse_config
from gatewayd.demo.virtual_node import VirtualNode, free_port
from gatewayd.store.database import Store
from gatewayd.store.faults import StoreFault
from tests.store_fake import RecordingStore


def health(state: str, error: str | None = None) -> DeviceHealth:
    return DeviceHealth(state=state, consecutive_failures=3 if state == "offline" else 0, last_error=error)


async def test_offline_opens_one_alert_and_online_closes_it():
    store = RecordingStore({"open_alerts": []})
    published = []
    alerts = DeviceAlerts("g", store, lambda a: published.append(a.message()))
    await alerts.check({"pump-1": health("degraded", "timed out"), "pump-2": health("online")}, 1000)
    assert not store.named("record_alert"), "degraded is not offline: one lost answer raises nothing"
    for t in (2000, 3000):
        await alerts.check({"pump-1": health("offline", "timed out"), "pump-2": health("online")}, t)
    (record,) = store.named("record_alert")
    assert record[1][:6] == ("g:pump-1:offline:2000", "pump-1", [], "warning", "device", 2000)
    assert record[1][6]["last_error"] == "timed out"
    await alerts.check({"pump-1": health("online"), "pump-2": health("online")}, 4000)
    assert store.named("update_alert")[-1] == (
        "update_alert",
        ("g:pump-1:offline:2000",),
        {"closed_ms": 4000, "detail": {"source": "gateway", "closed": "back online"}},
    )
    assert [m.get("update", False) for m in published] == [False, True] and published[1]["closed_ms"] == 4000


async def test_a_restart_continues_the_stored_alert_and_a_late_store_is_read_later():
    stored = [
        {"id": "g:pump-1:offline:500", "device": "pump-1", "channels": [], "severity": "warning", "opened_ms": 500}
    ]
    failing = [True]
    store = RecordingStore(
        {"open_alerts": stored},
        fail=lambda n: StoreFault("disk_full", "full") if n == "open_alerts" and failing[0] else None,
    )
    alerts = DeviceAlerts("g", store, lambda a: None)
    await alerts.check({"pump-1": health("connecting")}, 1000)  # the store cannot say yet
    failing[0] = False
    await alerts.check({"pump-1": health("offline", "refused")}, 2000)  # read now: still down, the same alert
    assert not store.named("record_alert")
    await alerts.check({"pump-1": health("online")}, 3000)
    assert store.named("update_alert")[-1][1] == ("g:pump-1:offline:500",)


async def test_a_daemon_raises_and_closes_it_for_a_device_that_comes_back(tmp_path):
    port = free_port()
    config = parse_config(
        f'[gateway]\nname = "g"\nstate_dir = "{tmp_path}"\n[detection]\nenabled = false\n'
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {port}\ninterval_s = 0.2\ntimeout_s = 0.5\n'
    )
    stop = asyncio.Event()
    ready = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(config, stop, ready))
    node = VirtualNode(unit=1, seed=1, port=port)

    def device_alerts() -> list[dict]:
        store = Store.in_state_dir(tmp_path)
        try:
            return store.alerts(kinds=["device"])
        finally:
            store.close()

    async def until(what, probe, timeout_s=30.0):
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not (value := await asyncio.to_thread(probe)):
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)
        return value

    try:
        gateway = await ready
        (opened,) = await until("the offline alert stored", device_alerts)
        assert opened["closed_ms"] is None and opened["severity"] == "warning" and opened["channels"] == []
        await asyncio.to_thread(node.start)
        await until("the alert closed", lambda: device_alerts()[0]["closed_ms"] is not None)
        assert gateway.pollers["pump-1"].health.state == "online"
        assert len(device_alerts()) == 1
    finally:
        stop.set()
        await task
        node.stop()
