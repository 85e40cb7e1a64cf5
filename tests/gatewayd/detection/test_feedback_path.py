"""Operator feedback end to end: labels given with `gatewayd alert` (or over MQTT) are stored
for the cloud and move the scope's threshold multiplier in the detection stage, logged and
stored; an MQTT command labels an alert and a bad one is refused into the dead letters."""

import asyncio
import json
import time

import pytest

from gatewayd import daemon
from gatewayd.alerts.alert import Alert
from gatewayd.cli.main import main
from gatewayd.config import load_config, parse_config
from gatewayd.detection.stage import DetectionStage
from gatewayd.store.async_store import AsyncStore
from gatewayd.store.database import Store
from gatewayd.store.worker import StoreWorker
from tests.integration.test_mqtt import Subscriber


@pytest.fixture
def site(tmp_path):
    config = tmp_path / "gatewayd.toml"
    config.write_text(
        f'[gateway]\nname = "g"\nstate_dir = "{tmp_path / "state"}"\n'
        "[detection]\nmultiplier_bounds = [0.7, 1.5]\n"
        '[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\n'
    )
    store = Store.in_state_dir(tmp_path / "state")
    for i in range(12):
        store.record_alert(Alert(f"g:pump-1:model:{i}", "pump-1", ["flow"], "warning", "model", 1000 * i, {}))
    store.close()
    return tmp_path, config


def test_labels_from_the_cli_move_the_threshold_within_bounds(site, capsys):
    tmp, config_path = site
    config = load_config(config_path)
    store = Store.in_state_dir(tmp / "state")

    async def scenario():
        worker = StoreWorker(tmp / "state", 10**9)  # the daemon's own path to the store
        assert await worker.open()
        stage = DetectionStage(config, AsyncStore(worker), None)
        await stage._check_labels()  # start: nothing yet
        for i in range(10):  # 5 labels before the first change, then one step per label: 1.1^5 > 1.5
            assert (
                main(
                    [
                        "alert",
                        "label",
                        f"g:pump-1:model:{i}",
                        "false",
                        "--operator",
                        "ana",
                        "--config",
                        str(config_path),
                    ]
                )
                == 0
            )
        stage.next_label_check = 0
        await stage._check_labels()
        await worker.close()
        return stage

    stage = asyncio.run(scenario())
    assert stage.scopes["pump-1"].adapter.multiplier == pytest.approx(1.5)  # raised, capped at the bound
    changes = store.conn.execute("SELECT scope, old, new, reason FROM threshold_changes ORDER BY id").fetchall()
    assert changes[0][:3] == ("pump-1", 1.0, pytest.approx(1.1)) and "precision" in changes[0][3]
    assert changes[-1][2] == pytest.approx(1.5)
    labels = store.conn.execute("SELECT kind, payload FROM outbox WHERE kind = 'label'").fetchall()
    assert len(labels) == 10 and json.loads(labels[0][1])["label"] == "false_positive"
    store.close()

    async def restarted():  # a restarted gateway starts from the stored multiplier
        worker = StoreWorker(tmp / "state", 10**9)
        assert await worker.open()
        stage = DetectionStage(config, AsyncStore(worker), None)
        await stage._check_labels()
        await worker.close()
        return stage.scopes["pump-1"].adapter.multiplier

    assert asyncio.run(restarted()) == pytest.approx(1.5)
    capsys.readouterr()
    assert main(["alert", "list", "--config", str(config_path)]) == 0
    assert "label=false_positive" in capsys.readouterr().out


def test_alert_cli_errors_and_ack(site, capsys):
    _, config = site
    assert main(["alert", "ack", "g:pump-1:model:0", "--config", str(config)]) == 0
    assert "acknowledged" in capsys.readouterr().out
    assert main(["alert", "ack", "g:pump-1:model:0", "--config", str(config)]) == 0
    assert "already" in capsys.readouterr().out
    assert main(["alert", "label", "nope", "true", "--config", str(config)]) == 2
    assert "no alert 'nope'" in capsys.readouterr().err
    assert main(["alert", "missed", "pump-1", "--at", "2026-11-24T08:00", "--config", str(config)]) == 0
    assert main(["alert", "list", "--config", str(config)]) == 0
    assert "label=missed" in capsys.readouterr().out


@pytest.mark.integration
async def test_mqtt_commands_label_alerts_and_bad_ones_are_dead_letters(tmp_path, mosquitto):
    config = parse_config(
        f'[gateway]\nname = "g"\nstate_dir = "{tmp_path / "state"}"\n[detection]\nenabled = false\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\naccept_unauthenticated_commands = true\n'
        '[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = 1\n'
    )
    store = Store.in_state_dir(tmp_path / "state")
    store.record_alert(Alert("g:pump-1:model:1", "pump-1", ["flow"], "warning", "model", 1, {}))
    store.close()
    stop = asyncio.Event()
    ready = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(config, stop, ready))
    sub = Subscriber(mosquitto.port, "gateway/g/command/result")
    try:
        await ready

        def results() -> list[str]:  # the probe's answers left out
            with sub.lock:
                found = [m[1]["result"] for m in sub.messages if m[0] == "gateway/g/command/result"]
            return [r for r in found if "acknowledged" not in r]

        def answered_probe() -> bool:
            with sub.lock:
                return any(m[0] == "gateway/g/command/result" for m in sub.messages)

        # The gateway subscribes once connected: an ack sent until one is answered shows it listens.
        deadline = time.monotonic() + 15
        while not answered_probe():
            assert time.monotonic() < deadline, "the gateway never answered a command"
            sub.client.publish("gateway/g/command", b'{"command": "ack", "alert": "g:pump-1:model:1"}', qos=1)
            for _ in range(5):
                await asyncio.sleep(0.1)
                if answered_probe():
                    break
        for payload in (
            b'{"command": "label", "alert": "g:pump-1:model:1", "label": "true", "operator": "ana"}',
            b'{"command": "label", "alert": "g:pump-1:model:1"}',
            b"not json",
            b'{"command": "delete", "alert": "x"}',
        ):
            sub.client.publish("gateway/g/command", payload, qos=1)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(results()) < 4:
            await asyncio.sleep(0.1)
        answers = results()
    finally:
        stop.set()
        await task
        sub.close()
    assert answers[0] == "alert g:pump-1:model:1 labelled true_positive"
    assert all(r.startswith("error: ") for r in answers[1:]) and len(answers) == 4
    store = Store.in_state_dir(tmp_path / "state")
    assert store.alerts(1)[0]["label"] == "true_positive"
    assert store.conn.execute("SELECT count(*) FROM dead_letter WHERE source = 'mqtt-command'").fetchone()[0] == 3
    store.close()
