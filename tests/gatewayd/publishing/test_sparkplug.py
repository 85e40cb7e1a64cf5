"""Sparkplug B end to end: a daemon polling a virtual node publishes as an edge node on
Mosquitto, and an independent decoder (the specification's schema compiled afresh by protoc
into a package of its own, read by a paho client) checks the Sparkplug 3.0 statements that
apply to an edge node:

- NBIRTH is the connection's first message, `seq` 0, with `bdSeq` (Int64) and `Node
  Control/Rebirth` (Boolean, false); the NDEATH delivered when the gateway dies carries the
  same `bdSeq`;
- a device's DBIRTH follows its edge node's NBIRTH and precedes its DDATA; it names every
  metric with a unique alias, its data type and value; DDATA refers to those aliases;
- `seq` goes up by one with every message of the edge node after NBIRTH, modulo 256;
- an NCMD `Node Control/Rebirth` = true brings a new NBIRTH (`seq` 0, the same `bdSeq`: the
  connection went on through NCMDs that are not Sparkplug payloads) and the devices' DBIRTHs;
  a device that goes offline gets a DDEATH."""

import asyncio
import importlib.util
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

import gatewayd.publishing.sparkplug as package
from gatewayd.demo.virtual_node import VirtualNode
from tests.integration.support import start_daemon

SCHEMA = Path(package.__file__).parent / "sparkplug_b.proto"
GROUP, NODE = "plant", "site-7"


@pytest.fixture(scope="module")
def spb(tmp_path_factory):
    """The schema compiled by protoc, here, into a package of its own: a decoder that shares
    no code with the daemon's encoder."""
    folder = tmp_path_factory.mktemp("spb")
    text = SCHEMA.read_text().replace("package org.eclipse.tahu.protobuf;", "package spb_check;")
    (folder / "spb_check.proto").write_text(text)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{folder}", f"--python_out={folder}", "spb_check.proto"],
        check=True,
    )
    spec = importlib.util.spec_from_file_location("spb_check_pb2", folder / "spb_check_pb2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Recorder:
    def __init__(self, port: int, spb):
        self.spb, self.lock, self.messages = spb, threading.Lock(), []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="sparkplug-check")
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("spBv1.0/#", qos=1)
        self.client.loop_start()

    def _message(self, client, userdata, message):
        kind = message.topic.split("/")[2]
        if kind == "NCMD":
            return  # the test's own commands: only the edge node's messages are checked
        payload = self.spb.Payload()
        payload.ParseFromString(message.payload)
        with self.lock:
            self.messages.append((message.topic, kind, payload))

    def wait(self, what, predicate, timeout_s=30.0):
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                found = [m for m in self.messages if predicate(m)]
            if found:
                return found
            assert time.monotonic() < deadline, f"no {what}: {[(m[0], m[2].seq) for m in self.messages[-8:]]}"
            time.sleep(0.05)

    def rebirth(self):
        payload = self.spb.Payload(timestamp=int(time.time() * 1000))
        payload.metrics.add(name="Node Control/Rebirth", datatype=11, boolean_value=True)
        self.client.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", payload.SerializeToString(), qos=1)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def metric(payload, name):
    return next(m for m in payload.metrics if m.name == name)


def test_the_gateway_is_a_sparkplug_edge_node(tmp_path, mosquitto, spb):
    node = VirtualNode(unit=1, seed=3, period_ms=50)
    node.start()
    recorder = Recorder(mosquitto.port, spb)
    proc = start_daemon(
        tmp_path,
        f'[gateway]\nname = "{NODE}"\nstate_dir = "{tmp_path / "state"}"\n[detection]\nenabled = false\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n'
        f'[sparkplug]\nenabled = true\ngroup_id = "{GROUP}"\n'
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {node.port}\ninterval_s = 0.1\ntimeout_s = 0.3\n',
    )
    try:
        recorder.wait("five DDATA", lambda m: m[1] == "DDATA", timeout_s=30)
        recorder.wait("five DDATA", lambda m: len([x for x in recorder.messages if x[1] == "DDATA"]) >= 5)
        for garbage in (b"\xff\xff\xff", b"not protobuf", b""):  # anyone on the plant network can publish
            recorder.client.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", garbage, qos=1)
        recorder.rebirth()
        recorder.wait("a second NBIRTH", lambda m: len([x for x in recorder.messages if x[1] == "NBIRTH"]) >= 2)
        recorder.wait("a DBIRTH after the rebirth", lambda m: [x[1] for x in recorder.messages].count("DBIRTH") >= 2)
        node.stop()
        recorder.wait("a DDEATH", lambda m: m[1] == "DDEATH", timeout_s=30)
        proc.send_signal(signal.SIGKILL)  # an unclean death: the broker delivers the NDEATH will
        proc.wait()
        recorder.wait("the NDEATH", lambda m: m[1] == "NDEATH", timeout_s=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        node.stop()
        recorder.close()

    with recorder.lock:
        messages = list(recorder.messages)
    kinds = [k for _, k, _ in messages]
    assert kinds[0] == "NBIRTH", kinds[:5]
    births = [p for _, k, p in messages if k == "NBIRTH"]
    bd_seq = metric(births[0], "bdSeq")
    assert bd_seq.datatype == 4 and all(metric(b, "bdSeq").long_value == bd_seq.long_value for b in births)
    rebirth = metric(births[0], "Node Control/Rebirth")
    assert rebirth.datatype == 11 and rebirth.boolean_value is False
    (death,) = [p for _, k, p in messages if k == "NDEATH"]
    assert metric(death, "bdSeq").long_value == bd_seq.long_value, "the will names the connection that died"

    # seq: 0 at each NBIRTH, then one more with every message of the edge node, modulo 256
    expected = None
    for topic, kind, payload in messages:
        if kind == "NDEATH":
            continue
        assert payload.HasField("timestamp"), topic
        if kind == "NBIRTH":
            assert payload.seq == 0
        else:
            assert expected is not None and payload.seq == expected, (topic, payload.seq, expected)
        expected = (payload.seq + 1) % 256

    # DBIRTH before any DDATA of its device; DDATA by aliases the DBIRTH declared
    first_birth = kinds.index("DBIRTH")
    assert "DDATA" not in kinds[:first_birth] and all(t.endswith("/pump-1") for t, k, _ in messages if k == "DBIRTH")
    dbirth = messages[first_birth][2]
    aliases = {m.alias: m.name for m in dbirth.metrics}
    assert set(aliases.values()) == {"pressure", "flow", "temperature", "current"} and len(aliases) == 4
    assert all(m.datatype == 10 for m in dbirth.metrics)  # Double
    flow = metric(dbirth, "flow")
    assert dict(zip(flow.properties.keys, [v.string_value for v in flow.properties.values])) == {"engUnit": "m3/h"}
    for _, kind, payload in messages:
        if kind == "DDATA":
            assert payload.metrics and all(not m.name and m.alias in aliases for m in payload.metrics)
            assert all(m.WhichOneof("value") == "double_value" for m in payload.metrics)
    # after the rebirth's NBIRTH, the device is born again before its data goes on
    second = [i for i, k in enumerate(kinds) if k == "NBIRTH"][1]
    assert kinds[second + 1] == "DBIRTH"
    assert kinds.index("DDEATH") > second


def test_a_broker_that_goes_away_brings_a_new_birth_sequence(tmp_path, mosquitto, spb, virtual_node):
    """Reconnected after the broker came back: a new NBIRTH with the next bdSeq and seq 0, its
    devices born again; the daemon polled on meanwhile."""
    proc = start_daemon(
        tmp_path,
        f'[gateway]\nname = "{NODE}"\nstate_dir = "{tmp_path / "state"}"\n[detection]\nenabled = false\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n[sparkplug]\nenabled = true\ngroup_id = "{GROUP}"\n'
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {virtual_node.port}\ninterval_s = 0.1\n',
    )
    recorder = Recorder(mosquitto.port, spb)
    try:
        (first,) = recorder.wait("the NBIRTH", lambda m: m[1] == "NBIRTH")
        recorder.wait("the DBIRTH", lambda m: m[1] == "DBIRTH")
        recorder.close()
        mosquitto.stop()
        mosquitto.start()
        recorder = Recorder(mosquitto.port, spb)
        (second,) = recorder.wait("a new NBIRTH", lambda m: m[1] == "NBIRTH", timeout_s=90)
        recorder.wait("a new DBIRTH", lambda m: m[1] == "DBIRTH")
        recorder.wait("data again", lambda m: m[1] == "DDATA")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
        recorder.close()
    assert second[2].seq == 0
    assert metric(second[2], "bdSeq").long_value == (metric(first[2], "bdSeq").long_value + 1) % 256


def test_the_generated_module_is_the_schema_compiled(tmp_path):
    """sparkplug_b_pb2.py is what protoc makes of sparkplug_b.proto now (a schema edited without
    regenerating it, or the other way round, shows)."""
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{SCHEMA.parent}", f"--python_out={tmp_path}", SCHEMA.name],
        check=True,
    )
    compare = (
        "import importlib.util, sys\n"
        "from gatewayd.publishing.sparkplug import sparkplug_b_pb2 as ours\n"
        "fresh = open(sys.argv[1]).read()\n"
        "import re, ast\n"
        "blob = ast.literal_eval(re.search(r\"AddSerializedFile\\((b'.*?')\\)\", fresh, re.S).group(1))\n"
        "sys.exit(0 if blob == ours.DESCRIPTOR.serialized_pb else 1)\n"
    )
    assert subprocess.run([sys.executable, "-c", compare, str(tmp_path / "sparkplug_b_pb2.py")]).returncode == 0


class FakeClient:
    def __init__(self):
        self.published = []

    async def publish(self, topic, payload, qos=0, retain=False):
        self.published.append(topic.split("/")[2])


async def test_a_device_event_lost_to_a_full_queue_is_made_good_at_the_next_birth():
    """Polls queued while the broker is away can fill the queue and push out a device's coming
    online: the next NBIRTH still bears its DBIRTH, and its data flows again."""
    from gatewayd.config import MqttSection, SparkplugSection
    from gatewayd.publishing.sparkplug import node as spb_node

    edge = spb_node.SparkplugNode(MqttSection(host="h"), SparkplugSection(enabled=True), "g")
    edge.queue, edge.bd_seq = asyncio.Queue(2), 0  # as run() sets them at the first connection
    edge.data("pump-1", 1, {"flow": 1.0})
    edge.data("pump-1", 2, {"flow": 2.0})
    edge.device("pump-1", True, {"flow": "m3/h"})  # the queue is full: the event is dropped
    assert edge.dropped == 1
    client = FakeClient()
    await edge._births(client)  # the broker is back
    assert client.published == ["NBIRTH", "DBIRTH"]
    while not edge.queue.empty():
        await edge._handle(client, edge.queue.get_nowait())
    assert client.published == ["NBIRTH", "DBIRTH", "DDATA", "DDATA"]
    edge.device("pump-1", False, {"flow": "m3/h"})
    await edge._handle(client, edge.queue.get_nowait())
    assert client.published[-1] == "DDEATH"
