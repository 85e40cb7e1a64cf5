"""Fleet inventories: node configurations generated from TOML, checked by the firmware's own
validator before any device is touched, errors naming file, line, node and key."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from edge_flash.inventory import InventoryError, load_inventory, parse_inventory
from edge_flash.node_config import NodeConfigError, key_path, validate

from gatewayd.demo.virtual_node import find_micropython, micropython_env

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
EXAMPLE = REPO / "examples" / "fleet.toml"

SMALL = """\
[defaults]
board = "virtual"
reset_code = 4242
modbus = { tcp = { port = 1502 } }

[[defaults.channels]]
name = "level"
unit = "m"
source = { type = "sim", signal = 0 }
resolution = 0.01
physical = [0, 10]
bounds = [1, 9]
zscore = { window = 16 }

[[nodes]]
id = "tank-1"
unit = 1
port = "socket://127.0.0.1:7001"
"""


def test_example_inventory(monkeypatch):
    monkeypatch.delenv("PLANT_WIFI_PASSWORD", raising=False)
    inventory = load_inventory(EXAMPLE, FIRMWARE)
    plans, errors = inventory.plans()
    assert [p.id for p in plans] == ["pump-1", "pump-2"]
    one, two = plans
    assert one.config["node_id"] == 1 and one.port == "/dev/ttyUSB0" and one.board == "esp32"
    assert one.config["modbus"]["rtu"]["de"] == 4 and one.channels == ["pressure", "current"]
    # pump-2's own thresholds for one channel, the rest from [defaults]
    assert two.serial == "0001A2B3" and two.config["channels"][0]["bounds"] == [0.5, 4.0]
    assert two.config["channels"][0]["rate"] == {"limit": 2.0, "horizon_s": 2.0}
    assert two.config["channels"][1]["bounds"] == [0.5, 14.0]
    # pump-3 names its Wi-Fi password by environment variable, which is not set here
    line = (
        EXAMPLE.read_text().splitlines().index(next(l for l in EXAMPLE.read_text().splitlines() if "password_env" in l))
    )
    assert str(errors["pump-3"]) == (
        f"{EXAMPLE}:{line + 1}: node 'pump-3': wifi.password_env: $PLANT_WIFI_PASSWORD is not set"
    )
    monkeypatch.setenv("PLANT_WIFI_PASSWORD", "s3cret")
    three = inventory.plan("pump-3")
    assert three.config["wifi"] == {"ssid": "plant-ot", "password": "s3cret"}
    assert set(three.config["modbus"]) == {"rtu", "tcp"}
    assert json.loads(three.config_json) == three.config


def test_virtual_example_inventory():
    plan = load_inventory(EXAMPLE.with_name("virtual-fleet.toml"), FIRMWARE).plan("tank-1")
    assert plan.board == "virtual" and plan.port == "socket://127.0.0.1:7001"
    assert plan.channels == ["pressure", "temperature"] and plan.config["modbus"] == {"tcp": {"port": 5502}}


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_firmware_rules_reported_at_the_line_that_breaks_them():
    text = SMALL.replace("zscore = { window = 16 }", "zscore = { window = 20 }")
    with pytest.raises(InventoryError) as err:
        parse_inventory(text, "fleet.toml", FIRMWARE).plan("tank-1")
    assert str(err.value) == (
        f"fleet.toml:{line_of(text, 'window = 20')}: node 'tank-1': "
        "channels[0].zscore.window: must be a power of two (8, 16, 32 or 64)"
    )
    # The same key set in the node's own table is reported there.
    text = SMALL + "sample_period_ms = 5\n"
    with pytest.raises(
        InventoryError,
        match=rf"fleet.toml:{line_of(text, 'sample_period_ms')}: node 'tank-1': "
        r"sample_period_ms: must be within 10\.\.60000, got 5",
    ):
        parse_inventory(text, "fleet.toml", FIRMWARE).plan("tank-1")


def test_inventory_structure_errors():
    cases = {
        SMALL.replace('id = "tank-1"', 'id = "tank-1"\ncolour = "red"'): r"fleet.toml:\d+: nodes.0.colour: unknown key",
        SMALL.replace("unit = 1\n", "unit = 300\n"): r"nodes.0.unit: Input should be less than or equal to 247",
        SMALL + '\n[[nodes]]\nid = "tank-1"\nunit = 2\n': r"node id 'tank-1' is used twice",
        SMALL + '\n[[nodes]]\nid = "tank-2"\nunit = 2\nport = "socket://127.0.0.1:7001"\n': r"are both on socket://",
        SMALL.replace("[[nodes]]", "[nodes"): r"fleet.toml: not valid TOML",
        SMALL.replace(
            'board = "virtual"', 'board = "esp8266"'
        ): r"defaults.board: Input should be 'esp32' or 'virtual'",
    }
    for text, message in cases.items():
        with pytest.raises(InventoryError, match=message):
            parse_inventory(text, "fleet.toml", FIRMWARE)
    text = SMALL + "[nodes.thresholds.flow]\nbounds = [1, 2]\n"
    with pytest.raises(InventoryError, match=r"thresholds.flow: no channel named 'flow'"):
        parse_inventory(text, "fleet.toml", FIRMWARE).plan("tank-1")
    with pytest.raises(InventoryError, match=r"no node 'tank-9' \(nodes: tank-1\)"):
        parse_inventory(SMALL, "fleet.toml", FIRMWARE).plan("tank-9")


def test_a_node_without_a_valid_config_does_not_hide_the_others():
    text = SMALL + '\n[[nodes]]\nid = "tank-2"\nunit = 2\nreset_code = 0\n'
    plans, errors = parse_inventory(text, "fleet.toml", FIRMWARE).plans()
    assert [p.id for p in plans] == ["tank-1"]
    assert "reset_code: must be within 1..65535, got 0" in str(errors["tank-2"])


def test_key_paths():
    assert key_path("channels[0].zscore.window") == ("channels", 0, "zscore", "window")
    assert key_path("node_id") == ("node_id",)


def node(*channels: dict, modbus: dict | None = None, **fields) -> dict:
    base = {"node_id": 1, "reset_code": 1, "modbus": {"tcp": {}} if modbus is None else modbus}
    return {**base, **fields, "channels": list(channels)}


def channel(source: dict, **fields) -> dict:
    return {"name": "a", "source": source, "resolution": 0.1, "physical": [0, 10], "bounds": [1, 9], **fields}


SIM = {"type": "sim", "signal": 0}
CASES = [
    node(channel(SIM)),
    node(modbus={}),
    node(channel({"type": "adc", "pin": 34, "value": [0, 1]}), modbus={"rtu": {"parity": "X"}}),
    node(channel(SIM), watchdog_ms=100, sample_period_ms=100),
    node(channel(SIM, resolution=1e-6, trips=["o"]), outputs=[{"name": "o", "pin": 2}]),
]


def test_host_check_agrees_with_the_node(tmp_path):
    """The validator run under CPython gives the verdict the node gives in MicroPython."""
    script = tmp_path / "check.py"
    script.write_text(
        "import sys, config\nfor path in sys.argv[1:]:\n"
        "    try:\n        config.load(path)\n        print('ok')\n"
        "    except config.ConfigError as e:\n        print(e.message)\n"
    )
    paths = []
    for i, case in enumerate(CASES):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(case))
    node = subprocess.run(
        [find_micropython(), str(script), *map(str, paths)],
        env=micropython_env(FIRMWARE),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert node.returncode == 0, node.stderr
    verdicts = node.stdout.splitlines()
    host = []
    for case in CASES:
        try:
            validate(case, FIRMWARE)
            host.append("ok")
        except NodeConfigError as exc:
            host.append(str(exc))
    assert host == verdicts
    assert verdicts[0] == "ok" and verdicts[1] == "channels: 1..16 channels" and "parity" in verdicts[2]
    assert "watchdog_ms" in verdicts[3] and "too fine" in verdicts[4]
    # and the firmware's generic module names are not left behind in this interpreter
    assert not {"config", "regmap", "detectors", "config_model", "micropython"} & set(sys.modules)
