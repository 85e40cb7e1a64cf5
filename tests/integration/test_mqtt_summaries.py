"""Telemetry as one-minute summaries: with `telemetry = "summaries"` the gateway publishes each
closed minute's statistics per channel (QoS 1), agreeing with the store, and no per-poll
telemetry. The wall clock is moved so that a minute closes a few seconds into the test."""

import asyncio
import time

import pytest

from gatewayd import daemon
from gatewayd.config import parse_config
from gatewayd.demo.virtual_node import VirtualNode
from gatewayd.store.database import Store
from tests.integration.test_mqtt import Subscriber

pytestmark = pytest.mark.integration


async def test_summaries_of_each_closed_minute(tmp_path, mosquitto, monkeypatch):
    real_ns = time.time_ns
    now_ms = real_ns() // 1_000_000
    shift_ms = (now_ms // 60_000 + 1) * 60_000 - 4_000 - now_ms  # the current minute ends 4 s from now
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + shift_ms * 1_000_000)
    node = VirtualNode(unit=1, seed=5)
    node.start()
    config = parse_config(
        f'[gateway]\nname = "site-9"\nstate_dir = "{tmp_path / "state"}"\n\n[store]\nflush_interval_s = 0.2\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\ntelemetry = "summaries"\n\n'
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {node.port}\nunit = 1\ninterval_s = 0.2\n'
    )
    sub = Subscriber(mosquitto.port, "gateway/site-9/#")
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(config, stop))
    try:
        deadline = time.monotonic() + 20
        summaries = []
        while time.monotonic() < deadline and not summaries:
            await asyncio.sleep(0.2)
            with sub.lock:
                summaries = [m for m in sub.messages if m[0] == "gateway/site-9/summary/pump-1"]
        assert summaries, f"no summary; got {sorted({m[0] for m in sub.messages})}"
    finally:
        stop.set()
        await task
        sub.close()
        node.stop()
    body = summaries[0][1]
    assert body["device"] == "pump-1" and body["minute_ms"] % 60_000 == 0
    assert set(body["channels"]) == {"pressure", "flow", "temperature", "current"}
    assert not [m for m in sub.messages if "/telemetry/" in m[0]]
    store = Store(tmp_path / "state" / "gatewayd.sqlite3", readonly=True)
    try:
        for channel, stats in body["channels"].items():
            block = store.readings("pump-1", channel, body["minute_ms"], body["minute_ms"] + 60_000)
            assert stats["count"] == len(block) > 5
            assert stats["min"] == pytest.approx(block.values.min()) and stats["max"] == pytest.approx(
                block.values.max()
            )
            assert stats["mean"] == pytest.approx(block.values.mean(), rel=1e-9)
            assert stats["std"] == pytest.approx(block.values.std(), rel=1e-6, abs=1e-9)
            assert stats["last"] == pytest.approx(block.values[-1])
    finally:
        store.close()
