"""Generic Modbus devices against pymodbus servers: every data type and byte/word order
decoded to known values over TCP and over RTU on a pty pair; a device answering with
exceptions or not at all does not disturb the others' schedule."""

import asyncio
import struct

import pytest
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from gatewayd.acquisition.links import RtuBus, RtuLink
from gatewayd.acquisition.poller import Poller
from gatewayd.acquisition.profiles.generic import plan
from gatewayd.config import BusSection, DeviceSection, RegisterSection
from gatewayd.demo.virtual_node import free_port


def words(fmt, value, *, word_order="big", byte_order="big"):
    raw = struct.pack(">" + fmt, value)
    regs = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if byte_order == "little":
        regs = [((w & 0xFF) << 8) | (w >> 8) for w in regs]
    return list(reversed(regs)) if word_order == "little" else regs


HOLDING = [0] * 40
HOLDING[0:1] = words("h", -1234)
HOLDING[1:2] = words("H", 54321)
HOLDING[2:4] = words("i", -123456789)
HOLDING[4:6] = words("I", 3_000_000_000, word_order="little")
HOLDING[6:8] = words("f", 123.456)
HOLDING[8:10] = words("f", -0.5, byte_order="little")
HOLDING[10:14] = words("d", 6.02214076e23, word_order="little")
HOLDING[20] = 650
INPUTS = [0] * 10
INPUTS[0:2] = words("f", 9.75, word_order="little", byte_order="little")

DEFS = [
    RegisterSection(name="i16", address=0, type="int16"),
    RegisterSection(name="u16", address=1, type="uint16"),
    RegisterSection(name="i32", address=2, type="int32"),
    RegisterSection(name="u32", address=4, type="uint32", word_order="little"),
    RegisterSection(name="f32", address=6, type="float32"),
    RegisterSection(name="f32_badc", address=8, type="float32", byte_order="little"),
    RegisterSection(name="f64", address=10, type="float64", word_order="little"),
    RegisterSection(name="temp", address=20, type="uint16", scale=0.1, offset=-40, unit="C"),
    RegisterSection(name="in_dcba", table="input", address=0, type="float32", word_order="little", byte_order="little"),
    RegisterSection(name="run", table="coil", address=0, type="bit"),
    RegisterSection(name="fault", table="coil", address=1, type="bit"),
]
EXPECTED = {
    "i16": -1234.0,
    "u16": 54321.0,
    "i32": -123456789.0,
    "u32": 3e9,
    "f32": struct.unpack(">f", struct.pack(">f", 123.456))[0],
    "f32_badc": -0.5,
    "f64": 6.02214076e23,
    "temp": 25.0,
    "in_dcba": 9.75,
    "run": 1.0,
    "fault": 0.0,
}


def device_context():
    # pymodbus 3 data blocks start at 1 for protocol address 0
    return ModbusDeviceContext(
        hr=ModbusSequentialDataBlock(1, HOLDING),
        ir=ModbusSequentialDataBlock(1, INPUTS),
        co=ModbusSequentialDataBlock(1, [True, False, True] + [False] * 13),
        di=ModbusSequentialDataBlock(1, [False] * 16),
    )


class Collector:
    def __init__(self):
        self.batches = []

    async def sink(self, batch):
        self.batches.append(batch)

    async def register(self, *args):
        pass


async def until(predicate, timeout_s=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def poll(poller, predicate):
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        await until(predicate)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def test_plan_merges_contiguous_registers_only():
    requests = plan(DEFS)
    assert [(r.table, r.address, r.count) for r in requests] == [
        ("holding", 0, 14),
        ("holding", 20, 1),
        ("input", 0, 2),
        ("coil", 0, 2),
    ]
    wide = [RegisterSection(name=f"r{i}", address=i * 2, type="float32") for i in range(70)]
    assert [(r.address, r.count) for r in plan(wide)] == [(0, 124), (124, 16)]


async def test_every_type_and_order_over_tcp():
    port = free_port()
    server = ModbusTcpServer(ModbusServerContext(devices=device_context(), single=True), address=("127.0.0.1", port))
    serving = asyncio.create_task(server.serve_forever())
    await until(server.is_active)  # listening
    out = Collector()
    device = DeviceSection(name="meter", profile="generic", host="127.0.0.1", port=port, interval_s=0.1, registers=DEFS)
    try:
        await poll(Poller(device, out.sink, out.register), lambda: len(out.batches) >= 2)
    finally:
        await server.shutdown()
        await asyncio.gather(serving, return_exceptions=True)
    got = {r.channel: r.value for r in out.batches[-1]}
    assert got == pytest.approx(EXPECTED, rel=1e-12)


async def test_rtu_bus_shared_by_two_devices_and_a_faulty_one(pty_pair):
    node_end, master_end = pty_pair
    context = ModbusServerContext(devices={1: device_context(), 2: device_context()}, single=False)
    server = ModbusSerialServer(context, port=node_end, baudrate=19200)
    serving = asyncio.create_task(server.serve_forever())
    await until(server.is_active)  # the pty is open
    # a pty refuses parity bits (EINVAL), so the line runs 8N1 here
    bus = RtuBus(BusSection(name="line", port=master_end, parity="N", timeout_s=0.3))
    outs = [Collector(), Collector(), Collector()]
    devices = [
        DeviceSection(
            name=f"m{u}", profile="generic", transport="rtu", bus="line", unit=u, interval_s=0.2, registers=DEFS
        )
        for u in (1, 2)
    ]
    # unit 2 asked for a register it does not have: exception 2, which no retry can fix
    bad_defs = [RegisterSection(name="ghost", address=999, type="uint16")]
    devices.append(
        DeviceSection(
            name="bad", profile="generic", transport="rtu", bus="line", unit=2, interval_s=0.2, registers=bad_defs
        )
    )
    pollers = [Poller(d, o.sink, o.register, link=RtuLink(d, bus)) for d, o in zip(devices, outs)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(p.run(stop)) for p in pollers]
    try:
        await until(lambda: len(outs[0].batches) >= 8 and len(outs[1].batches) >= 8, timeout_s=20)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        bus.close()
        await server.shutdown()
        await asyncio.gather(serving, return_exceptions=True)
    for out in outs[:2]:
        assert {r.channel: r.value for r in out.batches[-1]} == pytest.approx(EXPECTED, rel=1e-12)
        stamps = [b[0].ts_ms for b in out.batches]
        assert max(b - a for a, b in zip(stamps, stamps[1:])) < 600, "a good device kept its 0.2 s schedule"
    bad = pollers[2]
    assert not outs[2].batches
    assert "illegal data address" in bad.health.last_error and "retrying cannot fix" in bad.health.last_error
    assert bad.permanent and bad._backoff() == 30.0


async def test_silent_or_garbling_devices_do_not_delay_the_others():
    port = free_port()
    server = ModbusTcpServer(ModbusServerContext(devices=device_context(), single=True), address=("127.0.0.1", port))
    serving = asyncio.create_task(server.serve_forever())
    accepted = asyncio.Event()

    async def silent(reader, writer):
        accepted.set()
        await reader.read()
        writer.close()

    mute = await asyncio.start_server(silent, "127.0.0.1", 0)
    mute_port = mute.sockets[0].getsockname()[1]

    async def garbling(reader, writer):
        while data := await reader.read(260):
            writer.write(b"\x00\x01\x00\x00\x00\x02\xff" + data[::-1])  # a reply that is not one

    garbage = await asyncio.start_server(garbling, "127.0.0.1", 0)
    garbage_port = garbage.sockets[0].getsockname()[1]
    await until(server.is_active)  # the good device listens too (the others did once started)
    good, quiet, garbled = Collector(), Collector(), Collector()
    pollers = [
        Poller(
            DeviceSection(
                name="good", profile="generic", host="127.0.0.1", port=port, interval_s=0.1, registers=DEFS[:1]
            ),
            good.sink,
            good.register,
        ),
        Poller(
            DeviceSection(
                name="mute",
                profile="generic",
                host="127.0.0.1",
                port=mute_port,
                interval_s=0.1,
                timeout_s=2.0,
                registers=DEFS[:1],
            ),
            quiet.sink,
            quiet.register,
        ),
        Poller(
            DeviceSection(
                name="garbled",
                profile="generic",
                host="127.0.0.1",
                port=garbage_port,
                interval_s=0.1,
                timeout_s=0.5,
                registers=DEFS[:1],
            ),
            garbled.sink,
            garbled.register,
        ),
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(p.run(stop)) for p in pollers]
    try:
        await until(lambda: len(good.batches) >= 20, timeout_s=10)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        mute.close()
        await mute.wait_closed()
        garbage.close()
        await garbage.wait_closed()
        await server.shutdown()
        await asyncio.gather(serving, return_exceptions=True)
    assert accepted.is_set() and not quiet.batches and not garbled.batches
    assert pollers[2].health.consecutive_failures >= 1 and pollers[2].health.state in ("degraded", "offline")
    stamps = [b[0].ts_ms for b in good.batches]
    assert max(b - a for a, b in zip(stamps, stamps[1:])) < 400
