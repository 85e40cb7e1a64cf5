"""gatewayd publishing to a real Mosquitto: status with last will, telemetry, device health,
and a broker outage that loses nothing: messages wait in SQLite and follow after reconnect."""

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import paho.mqtt.client as paho
import pytest

from gatewayd.demo.virtual_node import VirtualNode
from gatewayd.store.database import Store
from tests.integration.support import start_daemon

pytestmark = pytest.mark.integration


class Subscriber:
    def __init__(self, port, topic):
        self.messages: list[tuple[str, dict, bool]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        try:
            body = json.loads(msg.payload)
        except (ValueError, RecursionError):
            return  # not one of the gateway's messages (a hostile command on a wildcard subscription)
        with self.lock:
            self.messages.append((msg.topic, body, msg.retain))

    def wait_for(self, predicate, timeout_s=15.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                found = [m for m in self.messages if predicate(m)]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no matching message among {self.messages[-5:]}")

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(what, probe, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not (value := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def backlog(state) -> int:
    """Messages the daemon keeps in its store for a broker that is away."""
    try:
        store = Store(state / "gatewayd.sqlite3", readonly=True)
    except sqlite3.Error:
        return 0
    try:
        return store.backlog_size()
    finally:
        store.close()


def test_publishes_and_survives_a_broker_outage(tmp_path, mosquitto):
    node = VirtualNode(unit=1, seed=3)
    node.start()
    config = tmp_path / "gatewayd.toml"
    config.write_text(
        f'[gateway]\nname = "site-7"\nstate_dir = "{tmp_path / "state"}"\n\n[store]\nflush_interval_s = 0.2\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\ntopic_prefix = "plant"\nhome_assistant = true\n\n'
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {node.port}\nunit = 1\ninterval_s = 0.2\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatewayd", "run", "--config", str(config)], stderr=subprocess.PIPE, text=True
    )
    sub = Subscriber(mosquitto.port, "plant/site-7/#")
    discovery = Subscriber(mosquitto.port, "homeassistant/#")
    try:
        found = discovery.wait_for(lambda m: m[0] == "homeassistant/sensor/site-7_pump-1_flow/config")
        topic, config_body, _ = found[0]
        assert config_body["state_topic"] == "plant/site-7/telemetry/pump-1"
        assert config_body["unit_of_measurement"] == "m³/h" and config_body["device_class"] == "volume_flow_rate"
        assert [a["topic"] for a in config_body["availability"]] == [
            "plant/site-7/status",
            "plant/site-7/health/pump-1",
        ]
        gateway_device = discovery.wait_for(lambda m: m[0] == "homeassistant/binary_sensor/site-7_status/config")
        assert config_body["device"]["via_device"] in gateway_device[0][1]["device"]["identifiers"]
        discovery.close()
        sub.wait_for(lambda m: m[0] == "plant/site-7/status" and m[1]["state"] == "online")
        sub.wait_for(lambda m: m[0] == "plant/site-7/health/pump-1" and m[1]["state"] == "online")
        telemetry = sub.wait_for(lambda m: m[0] == "plant/site-7/telemetry/pump-1")
        body = telemetry[0][1]
        assert body["schema"] == 1 and set(body["values"]) == {"pressure", "flow", "temperature", "current"}
        assert body["units"]["flow"] == "m3/h"

        sub.close()
        mosquitto.stop()
        outage_start = time.time() * 1000
        # an outage of 15 polls or more: the daemon has kept that many telemetry messages for later
        wait_until("15 messages kept while the broker is away", lambda: backlog(tmp_path / "state") >= 15)
        outage_end = time.time() * 1000
        mosquitto.start()
        sub = Subscriber(mosquitto.port, "plant/site-7/#")
        sub.wait_for(lambda m: m[0] == "plant/site-7/status" and m[1]["state"] == "online", timeout_s=90)

        def replayed() -> list[int]:
            with sub.lock:
                return sorted(
                    {
                        m[1]["ts_ms"]
                        for m in sub.messages
                        if m[0].endswith("/telemetry/pump-1") and outage_start + 500 < m[1]["ts_ms"] < outage_end - 500
                    }
                )

        expected = 0.8 * (outage_end - outage_start - 1000) / 200
        stamps = wait_until(
            "the outage's readings published after it", lambda: len(replayed()) >= expected and replayed(), timeout_s=30
        )
        # polling went on during the outage: no gap in the published readings
        assert max(b - a for a, b in zip(stamps, stamps[1:])) < 1000

        proc.send_signal(signal.SIGKILL)  # an unclean death: the broker publishes the last will
        proc.wait()
        will = sub.wait_for(lambda m: m[0] == "plant/site-7/status" and m[1]["state"] == "offline")[-1]
        assert "ts_ms" not in will[1], "the will carries no time: it would be the connect time"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        sub.close()
        node.stop()


def test_alert_raised_during_an_outage_arrives_after_it(tmp_path, mosquitto):
    # the pump's motor current jumps 20 A at sample 150 (3 s at 20 ms): a critical bound on the node
    node = VirtualNode(unit=1, seed=4, period_ms=20, extra_args=("--fault", "3:offset:150:20"))
    node.start()
    state = tmp_path / "state"
    config = tmp_path / "gatewayd.toml"
    config.write_text(
        f'[gateway]\nname = "site-8"\nstate_dir = "{state}"\n\n[store]\nflush_interval_s = 0.2\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n\n'
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {node.port}\nunit = 1\ninterval_s = 0.1\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatewayd", "run", "--config", str(config)], stderr=subprocess.PIPE, text=True
    )
    sub = Subscriber(mosquitto.port, "gateway/site-8/#")
    try:
        sub.wait_for(lambda m: m[0] == "gateway/site-8/status" and m[1]["state"] == "online")
        sub.close()
        mosquitto.stop()
        deadline = time.monotonic() + 20
        alerts = []
        while time.monotonic() < deadline and not alerts:
            time.sleep(0.2)
            store = Store(state / "gatewayd.sqlite3", readonly=True)
            alerts = store.conn.execute("SELECT id, severity, channels FROM alerts").fetchall()
            store.close()
        assert alerts, "no alert while the broker was away"
        alert_id, severity, channels = alerts[0]
        assert severity == "critical" and json.loads(channels) == ["current"]
        mosquitto.start()
        sub = Subscriber(mosquitto.port, "gateway/site-8/#")
        got = sub.wait_for(lambda m: m[0] == "gateway/site-8/alerts", timeout_s=90)
        assert got[0][1]["id"] == alert_id and got[0][1]["severity"] == "critical"
        assert "high" in got[0][1]["detail"]["checks"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
        sub.close()
        node.stop()


def test_a_clean_stop_leaves_no_device_shown_online(tmp_path, mosquitto, virtual_node):
    proc = start_daemon(
        tmp_path,
        f'[gateway]\nname = "site-9"\nstate_dir = "{tmp_path / "state"}"\n[detection]\nenabled = false\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n'
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {virtual_node.port}\ninterval_s = 0.1\n',
    )
    sub = Subscriber(mosquitto.port, "gateway/site-9/#")
    try:
        sub.wait_for(lambda m: m[0] == "gateway/site-9/health/pump-1" and m[1]["state"] == "online")
    finally:
        sub.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    late = Subscriber(mosquitto.port, "gateway/site-9/#")  # what a SCADA connecting now is told (retained)
    try:
        (health,) = late.wait_for(lambda m: m[0] == "gateway/site-9/health/pump-1")
        assert health[1]["state"] == "offline" and health[1]["last_error"] == "the gateway stopped: not polled"
        (status,) = late.wait_for(lambda m: m[0] == "gateway/site-9/status")
        assert status[1]["state"] == "offline"
    finally:
        late.close()
