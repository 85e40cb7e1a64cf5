"""The node as a Modbus slave seen by pymodbus: RTU over a real pty pair, TCP over loopback;
reset and threshold tuning over the wire; faults injected into the simulated plant."""

import struct
import time

import pytest
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType

from gatewayd.acquisition.profiles import edge_node as m
from gatewayd.demo.virtual_node import VirtualNode


def f32(regs, i):
    return struct.unpack(">f", struct.pack(">HH", regs[i], regs[i + 1]))[0]


def words(value):
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def wait_for(fn, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def sample_count(client, unit: int) -> int:
    high, low = client.read_input_registers(m.IR_SAMPLE_COUNT, count=2, device_id=unit).registers
    return high << 16 | low


@pytest.fixture
def tcp_node(tmp_path):
    node = VirtualNode(unit=3, seed=4, period_ms=20, extra_args=("--state-dir", str(tmp_path / "flash")))
    node.start()
    client = ModbusTcpClient("127.0.0.1", port=node.port, timeout=2)
    assert client.connect()
    yield node, client, tmp_path / "flash"
    client.close()
    node.stop()


def test_rtu_over_a_pty_pair(pty_pair, tmp_path):
    node_tty, master_tty = pty_pair
    node = VirtualNode(unit=7, seed=2, period_ms=50, extra_args=("--rtu", node_tty, "--state-dir", str(tmp_path)))
    node.start()
    client = ModbusSerialClient(master_tty, framer=FramerType.RTU, baudrate=19200, timeout=1, retries=0)
    try:
        assert client.connect()
        ident = client.read_input_registers(0, count=m.IDENTITY_REGISTERS, device_id=7)
        assert not ident.isError(), ident
        assert ident.registers[m.IR_MAGIC] == m.MAGIC and ident.registers[m.IR_NODE_ID] == 7
        values = client.read_input_registers(m.IR_CHANNEL_BASE, count=40, device_id=7).registers
        assert 0.5 < f32(values, 0) < 7.0  # pressure, bar
        hr = client.read_holding_registers(m.HR_CHANNEL_BASE, count=8, device_id=7).registers
        assert (f32(hr, m.HR_LOW), f32(hr, m.HR_HIGH)) == (0.5, 5.0)
        # another unit on the same bus: silence, as RTU requires
        with pytest.raises(ModbusIOException):
            client.read_input_registers(0, count=1, device_id=9)
        # a frame with a bad CRC is not answered and is counted
        client.socket.write(bytes([7, 4, 0, 0, 0, 1, 0xDE, 0xAD]))
        time.sleep(0.3)  # RTU: the line stays silent past the frame gap before the next request
        client.socket.reset_input_buffer()
        ident = client.read_input_registers(0, count=m.IDENTITY_REGISTERS, device_id=7).registers
        assert ident[m.IR_BAD_FRAMES + 1] >= 1
        # writes over RTU: a tuned Z threshold outside the node's range is clamped
        z = m.HR_CHANNEL_BASE + m.HR_Z_THRESHOLD
        assert not client.write_register(z, 1000, device_id=7).isError()
        assert client.read_holding_registers(z, count=1, device_id=7).registers == [800]
    finally:
        client.close()
        node.stop()


def test_tcp_tuning_cannot_widen_a_safety_bound(tcp_node):
    _, client, _ = tcp_node
    high = m.HR_CHANNEL_BASE + m.HR_HIGH
    assert not client.write_registers(high, words(99.0), device_id=3).isError()
    assert f32(client.read_holding_registers(high, count=2, device_id=3).registers, 0) == 5.0
    assert not client.write_registers(high, words(4.5), device_id=3).isError()
    assert f32(client.read_holding_registers(high, count=2, device_id=3).registers, 0) == 4.5
    half = client.write_register(high, 0x4000, device_id=3)
    assert half.isError() and half.exception_code == 3


def test_spike_trips_latches_and_needs_the_reset_code(tmp_path):
    # current (channel 3) jumps by 20 A at sample 100: above the 14 A critical bound
    node = VirtualNode(
        unit=3, seed=4, period_ms=20, extra_args=("--state-dir", str(tmp_path), "--fault", "3:offset:100:20")
    )
    node.start()
    client = ModbusTcpClient("127.0.0.1", port=node.port, timeout=2)
    try:
        assert client.connect()

        def identity():
            return client.read_input_registers(0, count=m.IDENTITY_REGISTERS, device_id=3).registers

        regs = wait_for(lambda: (r := identity())[m.IR_TRIP_LATCHED] and r)
        assert regs[m.IR_TRIP_CAUSE] == (3 << 8) | 3  # channel 3, check "high"
        assert regs[m.IR_OUTPUTS_ENERGISED] == 0
        assert regs[m.IR_NODE_STATUS] & m.STATUS_TRIP_LATCHED
        assert (tmp_path / "output-pump_enable").read_text() == "0"
        assert "latched" in (tmp_path / "trip.json").read_text()
        wrong = client.write_register(m.HR_RESET, 1, device_id=3)
        assert wrong.isError() and wrong.exception_code == 3
        assert identity()[m.IR_RESET_REJECTS] == 1

        # the right code clears the latch, but the fault is still there: it trips again
        def trips():
            high, low = identity()[m.IR_TRIPS : m.IR_TRIPS + 2]
            return high << 16 | low

        before = trips()
        assert not client.write_register(m.HR_RESET, 4242, device_id=3).isError()
        wait_for(lambda: trips() > before and identity()[m.IR_TRIP_LATCHED] == 1)
    finally:
        client.close()
        node.stop()


def test_trip_survives_a_restart(tmp_path):
    args = ("--state-dir", str(tmp_path), "--fault", "0:offset:80:9")  # pressure above 5 bar
    with VirtualNode(unit=2, seed=5, period_ms=20, extra_args=args) as node:
        client = ModbusTcpClient("127.0.0.1", port=node.port, timeout=2)
        assert client.connect()
        wait_for(lambda: client.read_input_registers(m.IR_TRIP_LATCHED, count=1, device_id=2).registers[0])
        client.close()
    # reboot without the fault: still latched, outputs still safe
    with VirtualNode(unit=2, seed=5, period_ms=20, extra_args=("--state-dir", str(tmp_path))) as node:
        client = ModbusTcpClient("127.0.0.1", port=node.port, timeout=2)
        assert client.connect()
        # well past the warm-up window (50 samples at 20 ms): the latch has had every chance to clear
        wait_for(lambda: sample_count(client, 2) >= 50)
        regs = client.read_input_registers(0, count=m.IDENTITY_REGISTERS, device_id=2).registers
        assert regs[m.IR_TRIP_LATCHED] == 1 and regs[m.IR_OUTPUTS_ENERGISED] == 0
        assert not client.write_register(m.HR_RESET, 4242, device_id=2).isError()
        wait_for(lambda: client.read_input_registers(m.IR_OUTPUTS_ENERGISED, count=1, device_id=2).registers[0])
        client.close()


def test_bad_config_file_keeps_the_node_safe_and_says_why(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"node_id": 4, "reset_code": 1, "channels": [], "modbus": {"tcp": {}}}')
    with VirtualNode(unit=4, extra_args=("--config", str(bad), "--state-dir", str(tmp_path))) as node:
        client = ModbusTcpClient("127.0.0.1", port=node.port, timeout=2)
        assert client.connect()
        regs = client.read_input_registers(0, count=m.IDENTITY_REGISTERS, device_id=4).registers
        client.close()
        assert regs[m.IR_MAGIC] == m.MAGIC
        assert regs[m.IR_NODE_STATUS] & m.STATUS_CONFIG_ERROR and regs[m.IR_NODE_STATUS] & m.STATUS_SAFE_STATE
        assert regs[m.IR_CONFIG_ERROR] == 3
    assert not (tmp_path / "output-pump_enable").exists()


def test_csv_replay_drives_the_channels(tmp_path):
    rows = ["timestamp,pressure,flow,temperature,current"]
    for i in range(200):
        rows.append(f"{i},{2.0 + (i % 7) * 0.01},{20 + (i % 5) * 0.1},30.0{i % 3},{6 + (i % 4) * 0.05}")
    for i in (150, 151, 152):  # three missing pressure readings: past the hysteresis of 3
        rows[i + 1] = f"{i},,20,30,6"
    csv_path = tmp_path / "replay.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    with VirtualNode(
        unit=6, period_ms=20, extra_args=("--replay", str(csv_path), "--state-dir", str(tmp_path))
    ) as node:
        client = ModbusTcpClient("127.0.0.1", port=node.port, timeout=2)
        assert client.connect()
        values = client.read_input_registers(m.IR_CHANNEL_BASE, count=40, device_id=6).registers
        assert 1.99 < f32(values, 0) < 2.08 and 19.9 < f32(values, 10) < 20.5
        # the missing cell is a critical sensor fault: the pump trips
        regs = wait_for(
            lambda: (r := client.read_input_registers(0, count=24, device_id=6).registers)[m.IR_TRIP_LATCHED] and r
        )
        assert regs[m.IR_TRIP_CAUSE] == 0  # channel 0, check "fault"
        client.close()


def test_replay_without_a_matching_column_is_reported(tmp_path):
    csv_path = tmp_path / "replay.csv"
    csv_path.write_text("timestamp,other\n1,2\n")
    node = VirtualNode(unit=6, extra_args=("--replay", str(csv_path), "--state-dir", str(tmp_path)))
    with pytest.raises(Exception, match="no column 'pressure'"):
        node.start()
