"""The whole loop on one machine: a virtual node -> gatewayd -> cloud-sync (the real command)
-> the reference endpoint -> retrain -> signed bundle -> cloud-sync pulls it -> gatewayd
installs it and scores with it. The store starts with 40 minutes of history from the same
simulated plant, so the cloud has minutes to train on without the test waiting for them."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloud_sync.retrain import retrain
from cloud_sync.server import BackgroundEndpoint
from gatewayd import daemon
from gatewayd.config import load_config
from gatewayd.demo.virtual_node import VirtualNode
from gatewayd.models.bundle import generate_keypair, load_public_key
from gatewayd.models.install import ModelStore
from gatewayd.store.database import Reading, Store

pytestmark = pytest.mark.integration
FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
CHANNELS = [("pressure", "bar"), ("flow", "m3/h"), ("temperature", "C"), ("current", "A")]


def history(store: Store, minutes: int, seed: int) -> None:
    sys.path.insert(0, str(FIRMWARE))
    try:
        from plant import PumpPlant
    finally:
        sys.path.remove(str(FIRMWARE))
    plant = PumpPlant(seed=seed, dt_s=0.5)
    start = (time.time_ns() // 1_000_000 // 60_000 - minutes - 3) * 60_000
    store.register_device("pump-1", "edge-node", "history", {}, CHANNELS)
    for minute in range(minutes):
        batch = []
        for step in range(120):
            plant.update()
            ts = start + minute * 60_000 + step * 500
            batch += [Reading("pump-1", ch, ts, float(v)) for (ch, _), v in zip(CHANNELS, plant.values)]
        store.write_readings(batch)


async def wait_until(predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.25)
    return False


async def test_gateway_cloud_retrain_install_score(tmp_path):
    generate_keypair(tmp_path / "cloud.pem", tmp_path / "cloud.pub")
    endpoint = BackgroundEndpoint(tmp_path / "cloud")
    token_file = tmp_path / "token"
    token_file.write_text(endpoint.tokens.issue("site-l"))
    os.chmod(token_file, 0o600)
    node = VirtualNode(unit=1, seed=21)
    node.start()
    state = tmp_path / "state"
    store = Store.in_state_dir(state)
    history(store, 40, seed=21)
    store.close()
    config_path = tmp_path / "gatewayd.toml"
    config_path.write_text(
        f'[gateway]\nname = "site-l"\nstate_dir = "{state}"\n\n[store]\nflush_interval_s = 0.2\n\n'
        f'[models]\npublic_keys = ["{tmp_path / "cloud.pub"}"]\n\n'
        "[detection]\nbootstrap_minutes = 600\nhealth_max_alert_rate = 1.0\n\n"
        f'[cloud]\nurl = "{endpoint.url}"\ntoken_file = "{token_file}"\ninterval_s = 0.5\nmodel_poll_s = 1.0\n'
        "max_backoff_s = 1.0\n\n"
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {node.port}\nunit = 1\ninterval_s = 0.5\n'
    )
    config = load_config(config_path)
    stop = asyncio.Event()
    ready = asyncio.get_running_loop().create_future()
    gatewayd = asyncio.create_task(daemon.run(config, stop, ready))
    agent = subprocess.Popen(
        [sys.executable, "-m", "cloud_sync", "run", "--config", str(config_path)], stderr=subprocess.PIPE, text=True
    )
    try:
        gateway = await ready
        # the history's minutes reach the cloud
        assert await wait_until(lambda: len(endpoint.storage.records("site-l", "summary")) >= 40, 60)
        result = retrain(
            endpoint.storage,
            endpoint.bundles,
            tmp_path / "cloud.pem",
            name="pump-1",
            gateways=["site-l"],
            publish_to=["site-l"],
            trees=30,
        )
        assert result.version == 1 and result.windows >= 40
        models = ModelStore(state / "models", [load_public_key(tmp_path / "cloud.pub")])
        assert await wait_until(lambda: models.installed_version("pump-1") == 1, 30)  # pulled and installed
        stage = gateway.detection
        assert await wait_until(lambda: stage.status()["models"]["pump-1"]["version"] == 1, 10)
        scorer = stage.detectors["pump-1"].scorer
        assert scorer.manifest.training["source"] == "cloud:site-l" and scorer.spec.window_s == 60
        scored = stage.stats.scored
        assert await wait_until(lambda: stage.stats.scored > scored, 150)  # a live 60 s window scored by it
        # the gateway's report of the load reaches the cloud too
        assert await wait_until(
            lambda: any(
                r["payload"].get("event") == "loaded" for r in endpoint.storage.records("site-l", "model_event")
            ),
            20,
        )
        usage = endpoint.storage.usage("site-l")
        assert usage["batches"] >= 1 and usage["wire_bytes"] > 0
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
        stop.set()
        try:
            await gatewayd
        finally:
            node.stop()
            endpoint.stop()
    assert agent.returncode == 0, err
    assert stage.stats.errors == 0
