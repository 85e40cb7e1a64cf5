"""Home Assistant MQTT discovery payloads (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery,
the sensor and binary sensor schemas: https://www.home-assistant.io/integrations/sensor.mqtt/,
https://www.home-assistant.io/integrations/binary_sensor.mqtt/).

- The gateway is announced as a device of its own (a connectivity binary sensor on its status
  topic), so that every channel's device can name it in `via_device`.
- A channel is available only while the gateway says `online` and its device's health is
  `online` or `degraded` (`availability_mode: all`): a dead meter or a dead gateway never
  shows its last value as live.
- A numeric channel is a `sensor` with `state_class: measurement` (long-term statistics) and
  a `device_class` derived from its unit when Home Assistant knows that unit for it (a
  register may name its own); node units are written as Home Assistant spells them (`C` is
  `°C`, `m3/h` is `m³/h`). A bit (a coil, a discrete input) is a `binary_sensor`.
- Unique ids are `<gateway>_<device>_<channel>`: stable across restarts and reconnections."""

from __future__ import annotations

from typing import Any

# Units as nodes and device manuals write them -> Home Assistant's symbol.
UNIT_SYMBOLS = {"C": "°C", "degC": "°C", "F": "°F", "degF": "°F", "m3/h": "m³/h", "m3": "m³", "l/min": "L/min"}

# Home Assistant sensor device classes whose state class may be `measurement`, and the units
# it accepts for each (DEVICE_CLASS_UNITS in homeassistant/components/sensor/const.py; units it
# added later are left out so that older installations accept these too).
DEVICE_CLASSES: dict[str, frozenset[str]] = {
    "temperature": frozenset({"°C", "°F", "K"}),
    "pressure": frozenset({"Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi"}),
    "current": frozenset({"A", "mA"}),
    "voltage": frozenset({"V", "mV"}),
    "power": frozenset({"W", "kW"}),
    "frequency": frozenset({"Hz", "kHz", "MHz", "GHz"}),
    "volume_flow_rate": frozenset({"m³/h", "ft³/min", "L/min", "gal/min"}),
    "humidity": frozenset({"%"}),
    "speed": frozenset({"m/s", "km/h", "mph", "ft/s", "kn"}),
    "distance": frozenset({"mm", "cm", "m", "km"}),
    "weight": frozenset({"g", "kg"}),
}
HEALTH_AVAILABLE = "{{ 'online' if value_json.state in ('online', 'degraded') else 'offline' }}"


def unit_symbol(unit: str) -> str:
    return UNIT_SYMBOLS.get(unit, unit)


def device_class_of(unit: str) -> str | None:
    return next((cls for cls, units in DEVICE_CLASSES.items() if unit in units), None)


def gateway_config(gateway: str, status_topic: str) -> tuple[str, dict[str, Any]]:
    """The gateway as a device: a connectivity sensor on its retained status."""
    object_id = f"{gateway}_status"
    body = {
        "name": "status",
        "unique_id": object_id,
        "state_topic": status_topic,
        "value_template": "{{ value_json.state }}",
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
        "device": {"identifiers": [gateway], "name": gateway, "model": "edge gateway"},
    }
    return f"binary_sensor/{object_id}/config", body


def channel_config(
    gateway: str,
    device: str,
    channel: str,
    unit: str,
    *,
    telemetry_topic: str,
    status_topic: str,
    health_topic: str,
    bit: bool = False,
    device_class: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """One channel's discovery topic (below the discovery prefix) and payload."""
    object_id = f"{gateway}_{device}_{channel}".replace(".", "_")
    body: dict[str, Any] = {
        "name": channel,
        "unique_id": object_id,
        "state_topic": telemetry_topic,
        "availability": [
            {"topic": status_topic, "value_template": "{{ value_json.state }}"},
            {"topic": health_topic, "value_template": HEALTH_AVAILABLE},
        ],
        "availability_mode": "all",
        "device": {"identifiers": [f"{gateway}_{device}"], "name": device, "via_device": gateway},
    }
    if bit:
        body["value_template"] = "{{ 'ON' if value_json['values']['%s'] else 'OFF' }}" % channel
        if device_class:
            body["device_class"] = device_class
        return f"binary_sensor/{object_id}/config", body
    body["value_template"] = "{{ value_json['values']['%s'] }}" % channel
    # A meter's total (a register named energy) only grows: statistics sum it, not average it.
    body["state_class"] = "total_increasing" if device_class == "energy" else "measurement"
    symbol = unit_symbol(unit)
    if symbol:
        body["unit_of_measurement"] = symbol
    chosen = device_class or device_class_of(symbol)
    if chosen:
        body["device_class"] = chosen
    return f"sensor/{object_id}/config", body
