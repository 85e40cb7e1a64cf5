"""For the dashboard's tests: a running gateway with its dashboard, an HTTP client for its API,
and a model for the pump trained beforehand on the simulated plant, so that windows are scored
from the first one (the gateway's own bootstrap takes half a minute at least)."""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatewayd import daemon
from gatewayd.config import parse_config
from gatewayd.detection.features import FeatureSpec, window_features
from gatewayd.detection.local_training import local_key
from gatewayd.models.bundle import load_private_key, write_bundle
from gatewayd.models.install import ModelStore
from gatewayd.models.training import train_bundle
from gatewayd.store.database import Reading, Store

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts" / "dashboard"
PUMP_CHANNELS = ("current", "flow", "pressure", "temperature")  # sorted, as the gateway windows them
PLANT_ORDER = (3, 1, 0, 2)  # where each sits in firmware/plant.py's values
DAEMON_TASK = "gatewayd"  # the name of running_gateway's task: a test can see whether it still runs


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict | None = None,
    host: str = "127.0.0.1",
) -> Reply:
    """One HTTP request (blocking: call it through asyncio.to_thread from a test's loop)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


async def call(port: int, method: str, path: str, body: object = None, headers: dict | None = None) -> Reply:
    data = json.dumps(body) if body is not None and not isinstance(body, bytes | str) else body
    sent = {"Content-Type": "application/json", **(headers or {})} if method == "POST" else headers
    return await asyncio.to_thread(request, port, method, path, data, sent)


async def eventually(what: str, probe: Callable[[], Awaitable[object] | object], timeout_s: float = 15.0) -> object:
    """Wait until `probe()` (a coroutine function or a plain one) returns something true."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def quiet_meter() -> AsyncIterator[int]:
    """A Modbus TCP meter that answers and never alarms (a generic device has no checks of
    its own): the device for tests that are about something else. Yields its port."""
    from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
    from pymodbus.server import ModbusTcpServer

    from gatewayd.demo.virtual_node import free_port

    port = free_port()
    context = ModbusServerContext(devices=ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, [42] * 4)), single=True)
    server = ModbusTcpServer(context, address=("127.0.0.1", port))
    serving = asyncio.create_task(server.serve_forever())
    await eventually("the meter listening", server.is_active)
    try:
        yield port
    finally:
        await server.shutdown()
        await asyncio.gather(serving, return_exceptions=True)


QUIET_METER = '[[devices]]\nname = "pump-1"\nprofile = "generic"\nhost = "127.0.0.1"\nport = {port}\n' + (
    '[[devices.registers]]\nname = "level"\naddress = 0\n'
)


def daemon_task() -> asyncio.Task:
    """running_gateway's daemon task, in this test's loop."""
    return next(t for t in asyncio.all_tasks() if t.get_name() == DAEMON_TASK)


@asynccontextmanager
async def running_gateway(config_text: str) -> AsyncIterator[daemon.Gateway]:
    """The daemon in this test's loop, until the block ends; its dashboard listening."""
    config = parse_config(config_text)
    stop = asyncio.Event()
    ready: asyncio.Future[daemon.Gateway] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(config, stop, ready), name=DAEMON_TASK)
    try:
        gateway = await asyncio.wait_for(ready, 30)
        assert gateway.dashboard is not None
        await asyncio.wait_for(gateway.dashboard.serving.wait(), 10)
        yield gateway
    finally:
        stop.set()
        await task


def _plant():
    spec = importlib.util.spec_from_file_location("plant", REPO / "firmware" / "plant.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def install_pump_model(
    state_dir: Path, name: str = "pump-1", *, window_s: float = 2.0, hop_s: float = 0.5, period_s: float = 0.1
) -> None:
    """Train a bundle on windows of the simulated pump (several plants, as the node's random
    generator differs from CPython's), sign it with the gateway's own key and install it."""
    plant = _plant()
    spec = FeatureSpec(PUMP_CHANNELS, window_s=window_s, hop_s=hop_s, stats=("mean", "std"), sample_period_s=period_s)
    per_window, per_hop = round(window_s / period_s), round(hop_s / period_s)
    features, ends = [], []
    for seed in range(1, 9):
        pump = plant.PumpPlant(seed=seed, dt_s=period_s)
        values = np.empty((3000, len(PUMP_CHANNELS)))
        for i in range(len(values)):
            pump.update()
            values[i] = [pump.values[j] for j in PLANT_ORDER]
        ts = np.arange(len(values), dtype=np.int64) * int(period_s * 1000)
        for end in range(per_window, len(values), per_hop):
            features.append(window_features(spec, ts[end - per_window : end], values[end - per_window : end]))
            ends.append(ts[end - 1])
    trained = train_bundle(
        np.array(features), np.array(ends), spec, name=name, version=1, source="test: simulated pump", trees=20
    )
    key_path, public = local_key(state_dir)
    bundle = write_bundle(state_dir / "bundle-v1", trained.manifest, trained.files, load_private_key(key_path))
    ModelStore(state_dir / "models", [public]).install(bundle)


DAY_MS = 86_400_000
HOUR_MS = 3_600_000


def write_flow_history(state_dir: Path, now: int) -> np.ndarray:
    """pump-1's flow in the store: two days of a reading every 10 s up to a minute ago, with four
    hours missing 30 h ago (the daemon was stopped) and a minute missing 20 min ago. Returns
    the readings' times."""
    first = (now - 2 * DAY_MS) // 60_000 * 60_000
    ts = np.arange(first, now - 60_000, 10_000, dtype=np.int64)
    stopped = (ts >= now - 30 * HOUR_MS) & (ts < now - 26 * HOUR_MS)
    silent = (ts >= now - 20 * 60_000) & (ts < now - 19 * 60_000)
    ts = ts[~stopped & ~silent]
    store = Store.in_state_dir(state_dir)
    store.register_device("pump-1", "pump", "127.0.0.1:502 unit 1", {}, [("flow", "m3/h")])
    for part in np.array_split(ts, 20):
        store.write_readings([Reading("pump-1", "flow", int(t), 10.0 + int(t) // 10_000 % 7) for t in part])
    store.close()
    return ts
