"""Home Assistant discovery payloads, checked against the rules of Home Assistant's own MQTT
discovery schema (homeassistant/components/mqtt/mixins.py: the availability list and its
modes, the device block; mqtt/sensor.py and mqtt/binary_sensor.py: the platform keys;
sensor/const.py: the units each device class accepts and its state classes), as published
by a Publisher for an edge node and a generic meter with a coil."""

import json

import jinja2

from gatewayd.config import MqttSection
from gatewayd.publishing import home_assistant as ha
from gatewayd.publishing.mqtt import Publisher

COMMON = {"name", "unique_id", "state_topic", "value_template", "availability", "availability_mode", "device"}
ALLOWED = {
    "sensor": COMMON | {"unit_of_measurement", "device_class", "state_class"},
    "binary_sensor": COMMON | {"device_class", "payload_on", "payload_off"},
}
SENSOR_CLASSES_UNITS = {  # sensor/const.py DEVICE_CLASS_UNITS, the classes whose state class is measurement
    "temperature": {"°C", "°F", "K"},
    "pressure": {"Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi"},
    "current": {"mA", "A"},
    "volume_flow_rate": {"m³/h", "ft³/min", "L/min", "gal/min"},
    "power": {"W", "kW"},
    "humidity": {"%"},
}
BINARY_CLASSES = {"connectivity", "running", "problem", "power", "opening", "moving"}


def published(pub: Publisher) -> dict[str, dict]:
    out = {}
    while not pub.queue.empty():
        m = pub.queue.get_nowait()
        assert m.retain and m.qos == 1
        out[m.topic] = json.loads(m.payload)
    return out


def check_entity(component: str, body: dict, announced_devices: set[str]) -> None:
    assert set(body) <= ALLOWED[component], set(body) - ALLOWED[component]
    assert body["availability_mode"] in ("all", "any", "latest")
    for entry in body["availability"]:
        assert set(entry) <= {"topic", "payload_available", "payload_not_available", "value_template"}
        assert entry["topic"] and "#" not in entry["topic"] and "+" not in entry["topic"]
    device = body["device"]
    assert device["identifiers"] and device["via_device"] in announced_devices
    if component == "sensor" and "device_class" in body:
        assert body["unit_of_measurement"] in SENSOR_CLASSES_UNITS[body["device_class"]]
        assert body["state_class"] == "measurement"
    if component == "binary_sensor" and "device_class" in body:
        assert body["device_class"] in BINARY_CLASSES


def test_an_edge_node_and_a_meter_are_announced_as_home_assistant_accepts_them():
    pub = Publisher(MqttSection(host="h", home_assistant=True), "plant-7", backlog=None)  # type: ignore[arg-type]
    pub.discovery("pump-1", {"pressure": "bar", "flow": "m3/h", "temperature": "C", "current": "A", "speed": "rpm"})
    pub.discovery(
        "meter-1", {"power": "kW", "run": "", "level": "%"}, bits=frozenset({"run"}), classes={"run": "running"}
    )
    found = published(pub)
    gateway = found.pop("homeassistant/binary_sensor/plant-7_status/config")
    assert gateway["device_class"] == "connectivity" and gateway["state_topic"] == "gateway/plant-7/status"
    assert gateway["device"]["identifiers"] == ["plant-7"]
    for topic, body in found.items():
        component = topic.split("/")[1]
        check_entity(component, body, {gateway["device"]["identifiers"][0]})
    flow = found["homeassistant/sensor/plant-7_pump-1_flow/config"]
    assert (flow["unit_of_measurement"], flow["device_class"]) == ("m³/h", "volume_flow_rate")
    assert found["homeassistant/sensor/plant-7_pump-1_temperature/config"]["unit_of_measurement"] == "°C"
    speed = found["homeassistant/sensor/plant-7_pump-1_speed/config"]
    assert "device_class" not in speed and speed["state_class"] == "measurement"  # rpm has no class
    availability = {a["topic"] for a in flow["availability"]}
    assert (
        availability == {"gateway/plant-7/status", "gateway/plant-7/health/pump-1"}
        and flow["availability_mode"] == "all"
    )
    run = found["homeassistant/binary_sensor/plant-7_meter-1_run/config"]
    assert run["device_class"] == "running" and "unit_of_measurement" not in run
    pub.discovery("pump-1", {"flow": "m3/h"})  # announced again (reconnect): same ids, the gateway once
    again = published(pub)
    assert list(again) == ["homeassistant/sensor/plant-7_pump-1_flow/config"] and again[list(again)[0]] == flow


def test_the_templates_render_as_home_assistant_would():
    """Home Assistant renders value and availability templates with Jinja2."""
    environment = jinja2.Environment()

    def render(template: str, body: dict) -> str:
        return environment.from_string(template).render(value_json=body)

    for state, expected in [
        ("online", "online"),
        ("degraded", "online"),
        ("offline", "offline"),
        ("connecting", "offline"),
    ]:
        assert render(ha.HEALTH_AVAILABLE, {"state": state}) == expected
    telemetry = {"values": {"flow": 12.5, "run": 1.0, "stop": 0.0}}
    common = dict(telemetry_topic="t", status_topic="s", health_topic="h")
    _, flow = ha.channel_config("g", "d", "flow", "m3/h", **common)
    _, run = ha.channel_config("g", "d", "run", "", bit=True, **common)
    _, stop = ha.channel_config("g", "d", "stop", "", bit=True, **common)
    assert render(flow["value_template"], telemetry) == "12.5"
    assert (render(run["value_template"], telemetry), render(stop["value_template"], telemetry)) == ("ON", "OFF")
    assert render(flow["availability"][0]["value_template"], {"state": "offline"}) == "offline"
