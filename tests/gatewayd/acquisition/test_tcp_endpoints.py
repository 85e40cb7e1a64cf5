"""Devices behind one Modbus TCP server (a TCP-to-RTU gateway, a PLC with several unit ids)
share its connections. Against a server that accepts exactly one connection (or two) and
serves 11 unit ids, one of them silent: every other unit is read with its own values on its
schedule, the silent one fails on its own, and the server never sees a second connection."""

import asyncio

import pytest
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer

from gatewayd.acquisition.links import Links
from gatewayd.acquisition.poller import Poller
from gatewayd.config import parse_config
from gatewayd.demo.virtual_node import free_port

UNITS = range(1, 12)
SILENT = 6


class OneConnectionServer:
    """A TCP front that lets `limit` connections through to the Modbus server at once and
    closes any more at once, as small Modbus gateways and PLCs do. Requests for `silent` never
    reach the server and get no answer: a dead unit behind a TCP-to-RTU gateway."""

    def __init__(self, target_port: int, limit: int, silent: int):
        self.target_port, self.limit, self.silent = target_port, limit, silent
        self.open = self.peak = self.refused = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.relays: set[asyncio.Task] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= self.limit:
            self.refused += 1
            writer.close()
            return
        self.relays.add(asyncio.current_task())
        self.open += 1
        self.peak = max(self.peak, self.open)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def requests() -> None:  # MBAP frames, whole, those for the silent unit dropped
            while True:
                head = await reader.readexactly(7)
                body = await reader.readexactly(int.from_bytes(head[4:6], "big") - 1)
                if head[6] != self.silent:
                    up_writer.write(head + body)

        async def answers() -> None:
            while data := await up_reader.read(4096):
                writer.write(data)

        try:
            await asyncio.gather(requests(), answers())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()
            up_writer.close()
            self.relays.discard(asyncio.current_task())

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await asyncio.gather(*self.relays, return_exceptions=True)


def unit_context(unit: int) -> ModbusDeviceContext:
    holding = [unit * 100, unit]  # each unit's own values: a mixed-up answer shows
    return ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, holding + [0] * 8))


@pytest.mark.parametrize("connections", [1, 2])
async def test_units_behind_one_server_share_its_connections(connections):
    port = free_port()
    context = ModbusServerContext(devices={u: unit_context(u) for u in UNITS}, single=False)
    server = ModbusTcpServer(context, address=("127.0.0.1", port))
    serving = asyncio.create_task(server.serve_forever())
    front = OneConnectionServer(port, limit=connections, silent=SILENT)
    front_port = await front.start()
    devices = "".join(
        f'[[devices]]\nname = "meter-{u}"\nprofile = "generic"\nhost = "127.0.0.1"\nport = {front_port}\n'
        f"unit = {u}\ninterval_s = 0.2\ntimeout_s = 0.3\n"
        '[[devices.registers]]\nname = "code"\naddress = 0\n[[devices.registers]]\nname = "unit"\naddress = 1\n'
        for u in UNITS
    )
    endpoint = f'[[endpoints]]\nhost = "127.0.0.1"\nport = {front_port}\nconnections = {connections}\n'
    config = parse_config(f'[gateway]\nstate_dir = "/nonexistent"\n{endpoint}{devices}')
    links = Links(config)
    batches: dict[str, list] = {d.name: [] for d in config.devices}

    def sink_of(name):
        async def sink(batch):
            batches[name].append(batch)

        return sink

    async def register(*args):
        pass

    pollers = {d.name: Poller(d, sink_of(d.name), register, link=links.of(d)) for d in config.devices}
    stop = asyncio.Event()
    tasks = [asyncio.create_task(p.run(stop)) for p in pollers.values()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    try:
        while not all(len(batches[f"meter-{u}"]) >= 10 for u in UNITS if u != SILENT):
            assert loop.time() < deadline, {n: len(b) for n, b in batches.items()}
            await asyncio.sleep(0.05)
        silent = pollers[f"meter-{SILENT}"]
        while silent.health.consecutive_failures < 3:  # its own failures, counted as they come
            assert loop.time() < deadline, silent.health
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        links.close()
        await front.close()
        await server.shutdown()
        await asyncio.gather(serving, return_exceptions=True)
    assert front.refused == 0 and front.peak <= connections, "the server was never asked for more connections"
    for u in UNITS:
        name = f"meter-{u}"
        if u == SILENT:
            assert not batches[name]
            assert "did not answer within 0.3 s" in (pollers[name].health.last_error or "")
            continue
        assert {r.channel: r.value for r in batches[name][-1]} == {"code": u * 100.0, "unit": float(u)}
        stamps = [b[0].ts_ms for b in batches[name]]
        assert max(b - a for a, b in zip(stamps, stamps[1:])) < 1500, f"{name} kept near its 0.2 s schedule"
        assert pollers[name].health.consecutive_failures == 0


def test_an_endpoint_no_device_uses_is_refused():
    from gatewayd.config import ConfigError

    with pytest.raises(ConfigError, match="endpoint 10.0.0.9:502: no tcp device uses it"):
        parse_config('[[endpoints]]\nhost = "10.0.0.9"\n[[devices]]\nname = "a"\nhost = "10.0.0.1"\n')
