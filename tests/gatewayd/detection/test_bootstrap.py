"""Edge-first bootstrap: from an empty models directory, the gateway collects windows from a
virtual node, trains both models in a worker process, signs them with its own key, installs
them and scores; a bundle installed later takes over between windows (hot reload)."""

import asyncio
import json
import logging
import time

import numpy as np
import pytest

from gatewayd import daemon
from gatewayd.config import parse_config
from gatewayd.demo.virtual_node import VirtualNode
from gatewayd.detection.features import FeatureSpec
from gatewayd.detection.local_training import local_key
from gatewayd.models.bundle import load_private_key, write_bundle
from gatewayd.models.install import ModelStore
from gatewayd.models.training import train_bundle
from gatewayd.store.database import Store

pytestmark = pytest.mark.integration


def manifest_v2_mean(models: ModelStore) -> list[float]:
    found = models.current("pump-1")
    assert found is not None
    return list(found[0].scaler.mean)


async def wait_until(predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.2)
    return False


async def test_bootstrap_then_hot_reload(tmp_path, caplog):
    node = VirtualNode(unit=1, seed=11)
    node.start()
    state = tmp_path / "state"
    config = parse_config(
        f'[gateway]\nname = "site-b"\nstate_dir = "{state}"\n\n[store]\nflush_interval_s = 0.2\n\n'
        '[detection]\nwindow_s = 2.0\nhop_s = 0.5\nbootstrap_minutes = 0.5\ntrees = 20\nstats = ["mean", "std"]\n'
        "health_windows = 6\nhealth_max_alert_rate = 0.5\nbaseline_follow_windows = 30\n\n"
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {node.port}\nunit = 1\ninterval_s = 0.1\n'
    )
    assert not (state / "models").exists()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    task = asyncio.create_task(daemon.run(config, stop, ready))
    try:
        gateway = await ready
        stage = gateway.detection
        assert await wait_until(lambda: stage.status()["models"]["pump-1"]["version"] == 1, 120), stage.status()
        models = ModelStore(state / "models", [local_key(state)[1]])
        manifest, folder = models.current("pump-1")  # signed by the gateway's own key, verified
        assert manifest.training["source"].startswith("gateway:bootstrap")
        assert manifest.features["channels"] == ["current", "flow", "pressure", "temperature"]
        scored = stage.stats.windows
        assert await wait_until(lambda: stage.stats.windows >= scored + 4, 20)
        assert stage.detectors["pump-1"].scorer.manifest.version == 1

        # Another bundle (as the cloud agent or an operator would install it) takes over. It is
        # trained on the pump's own windows so far, as a retrained bundle would be: windows drawn
        # at random around the first model's scaler would not know the relation between the
        # channels, and would fail the health check whenever the pump runs away from that mean.
        rng = np.random.default_rng(0)
        spec = FeatureSpec.from_dict({k: v for k, v in manifest.features.items() if k != "names"})
        rows = list(stage.scopes["pump-1"].collected)
        x = np.vstack([r[1] for r in rows])
        ends = np.array([r[0] for r in rows], dtype=np.int64)
        trained = train_bundle(x, ends, spec, name="pump-1", version=2, source="test", trees=20)
        key_path, _ = local_key(state)
        models.install(write_bundle(tmp_path / "v2", trained.manifest, trained.files, load_private_key(key_path)))
        before = stage.stats.windows
        assert await wait_until(lambda: stage.status()["models"]["pump-1"]["version"] == 2, 10)
        assert stage.detectors["pump-1"].scorer.manifest.version == 2
        assert stage.stats.windows - before <= 3  # it took over at the next window or so
        assert await wait_until(lambda: stage.stats.windows >= before + 8, 10)  # and scoring goes on
        assert models.installed_version("pump-1") == 2  # it passed its health check

        # A bundle that alarms on everything (trained on a plant that never moved) fails its
        # health check on the last windows before it takes over, and is rolled back; the failed
        # version is reported, and refused if offered again.
        still = np.array(manifest.scaler.mean) + rng.normal(size=(64, len(spec.names))) * 1e-6
        bad = train_bundle(still, np.arange(64) * 500, spec, name="pump-1", version=3, source="test", trees=20)
        models.install(write_bundle(tmp_path / "v3", bad.manifest, bad.files, load_private_key(key_path)))
        assert await wait_until(lambda: models.installed_version("pump-1") == 2, 20)
        assert await wait_until(lambda: stage.status()["models"]["pump-1"]["version"] == 2, 10)
        assert models.rolled_back("pump-1") == [3]
        reader = Store(state / "gatewayd.sqlite3", readonly=True)
        events = [
            json.loads(p)
            for (p,) in reader.conn.execute("SELECT payload FROM outbox WHERE kind = 'model_event' ORDER BY id")
        ]
        reader.close()
        assert [(e["event"], e["version"]) for e in events][-2:] == [("rollback", 3), ("loaded", 2)]
        assert "alarmed" in events[-2]["reason"]
        assert stage.detectors["pump-1"].scorer.manifest.version == 2  # v3 never scored a live window

        # A bundle signed and whole but whose forest the runtime cannot load is rolled back too,
        # and detection goes on with the version before it.
        broken = train_bundle(x, ends, spec, name="pump-1", version=4, source="test", trees=20)
        files = {**broken.files, "iforest.tflite": b"not a flatbuffer" * 64}
        models.install(write_bundle(tmp_path / "v4", broken.manifest, files, load_private_key(key_path)))
        assert await wait_until(lambda: models.installed_version("pump-1") == 2, 20)
        assert models.rolled_back("pump-1") == [3, 4]
        before = stage.stats.windows
        assert await wait_until(lambda: stage.stats.windows >= before + 3, 10)
        assert stage.detectors["pump-1"].scorer.manifest.version == 2 and stage.stats.errors == 0
        assert stage.stats.dropped == 0

        # The baseline a device follows is saved at stop, and a restart under the same bundle
        # goes on from it instead of from the training state.
        stop.set()
        await task
        saved = json.loads((state / "baselines.json").read_text())
        assert saved["pump-1"]["bundle"] == "pump-1 v2"
        assert saved["pump-1"]["level"] != list(manifest_v2_mean(models))
        stop, ready = asyncio.Event(), loop.create_future()
        task = asyncio.create_task(daemon.run(config, stop, ready))
        with caplog.at_level(logging.INFO, logger="gatewayd.detection"):
            stage = (await ready).detection
            assert await wait_until(lambda: "pump-1" in stage.detectors, 20)
        assert any("pump-1: baseline restored" in r.getMessage() for r in caplog.records)
    finally:
        stop.set()
        await task
        node.stop()
