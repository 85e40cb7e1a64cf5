"""The gateway's edge-node profile against the firmware's register map, read from the
firmware module running in MicroPython, and against a live virtual node."""

import json
import struct

import pytest
from pymodbus.client import ModbusTcpClient

from gatewayd.acquisition.profiles import edge_node
from tests.micropython import run_in_micropython

SHARED = [
    "MAGIC",
    "MAP_VERSION",
    "IR_MAGIC",
    "IR_MAP_VERSION",
    "IR_FW_VERSION",
    "IR_NODE_ID",
    "IR_CHANNEL_COUNT",
    "IR_NODE_STATUS",
    "IR_UPTIME_S",
    "IR_SAMPLE_COUNT",
    "IR_SAMPLE_PERIOD_MS",
    "IR_OVERRUNS",
    "IR_CHANNEL_BASE",
    "IR_CHANNEL_STRIDE",
    "CH_VALUE",
    "CH_ZSCORE",
    "CH_MEAN",
    "CH_FLAGS",
    "CH_SEVERITY",
    "IR_DESCRIPTOR_BASE",
    "IR_DESCRIPTOR_STRIDE",
    "DESC_NAME_REGS",
    "DESC_UNIT",
    "DESC_UNIT_REGS",
    "MAX_CHANNELS",
    "IR_TRIP_LATCHED",
    "IR_TRIP_CAUSE",
    "IR_DETECTIONS",
    "IR_TRIPS",
    "IR_BAD_FRAMES",
    "IR_CONFIG_ERROR",
    "IR_OUTPUTS_ENERGISED",
    "IR_OUTPUT_COUNT",
    "IR_RESET_REJECTS",
    "IDENTITY_REGISTERS",
    "CH_RAW_FLAGS",
    "HR_RESET",
    "HR_CHANNEL_BASE",
    "HR_CHANNEL_STRIDE",
    "HR_LOW",
    "HR_HIGH",
    "HR_RATE_LIMIT",
    "HR_Z_THRESHOLD",
    "STATUS_RUNNING",
    "STATUS_CONFIG_ERROR",
    "STATUS_SAFE_STATE",
    "STATUS_TRIP_LATCHED",
    "STATUS_NOT_READY",
    "STATUS_WATCHDOG",
]


def firmware_constants() -> dict[str, int]:
    script = "import regmap, json; print(json.dumps({n: getattr(regmap, n) for n in %r}))" % SHARED
    return json.loads(run_in_micropython(script))


def test_profile_matches_firmware_register_map():
    assert firmware_constants() == {name: getattr(edge_node, name) for name in SHARED}


def identity_registers(**overrides):
    regs = [0] * edge_node.IDENTITY_REGISTERS
    regs[edge_node.IR_MAGIC] = edge_node.MAGIC
    regs[edge_node.IR_MAP_VERSION] = 1
    regs[edge_node.IR_FW_VERSION] = 0x0102
    regs[edge_node.IR_NODE_ID] = 4
    regs[edge_node.IR_CHANNEL_COUNT] = 2
    regs[edge_node.IR_SAMPLE_PERIOD_MS] = 100
    for name, value in overrides.items():
        regs[getattr(edge_node, name)] = value
    return regs


def test_identity_parsing_and_rejections():
    ident = edge_node.parse_identity(identity_registers())
    assert (ident.node_id, ident.firmware_version, ident.channel_count) == (4, "1.2", 2)
    with pytest.raises(edge_node.ProfileError, match="not the node magic"):
        edge_node.parse_identity(identity_registers(IR_MAGIC=0x1234))
    with pytest.raises(edge_node.ProfileError, match="version 2 is not supported"):
        edge_node.parse_identity(identity_registers(IR_MAP_VERSION=2))
    with pytest.raises(edge_node.ProfileError, match="channel count 0"):
        edge_node.parse_identity(identity_registers(IR_CHANNEL_COUNT=0))


def test_channel_spans_stay_within_125_registers():
    spans = edge_node.channel_spans(16)
    assert all(count <= 125 for _, count in spans)
    covered = [a for start, count in spans for a in range(start, start + count)]
    assert covered == list(range(100, 100 + 160))


def test_live_virtual_node_decodes_to_plausible_pump_values(virtual_node):
    client = ModbusTcpClient("127.0.0.1", port=virtual_node.port, timeout=2)
    try:
        assert client.connect()
        ident = edge_node.parse_identity(client.read_input_registers(0, count=24, device_id=1).registers)
        assert ident.map_version == 1 and ident.node_id == 1 and ident.sample_period_ms == 50
        address, count = edge_node.descriptor_span(ident.channel_count)
        names = edge_node.parse_descriptors(
            client.read_input_registers(address, count=count, device_id=1).registers, ident.channel_count
        )
        assert [(c.name, c.unit) for c in names] == [
            ("pressure", "bar"),
            ("flow", "m3/h"),
            ("temperature", "C"),
            ("current", "A"),
        ]
        regs = client.read_input_registers(100, count=40, device_id=1).registers
        values = {c.name: s.value for c, s in zip(names, edge_node.parse_channels(regs, 4))}
        assert 0.5 < values["pressure"] < 7 and 10 < values["flow"] < 35
        assert 15 < values["temperature"] < 45 and 2 < values["current"] < 12
        raw = struct.pack(">HH", regs[0], regs[1])
        assert struct.unpack(">f", raw)[0] == values["pressure"]
    finally:
        client.close()
