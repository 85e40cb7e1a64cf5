"""Modbus links: how a poller reaches its device.

TCP: one `TcpEndpoint` per (host, port), shared by every unit id behind it (a TCP-to-RTU
gateway, a PLC serving several unit ids), with `connections` connections to it (default 1:
many such servers accept one to eight): a request takes a free connection, so with one they
take turns. Each request waits for its own unit's timeout only; a unit that does not answer
is its own failure and leaves the connection to the others. RTU: one client per serial bus,
shared by its devices under one lock, with the inter-frame pause the spec requires, so one
bus never carries two requests at once."""

from __future__ import annotations

import asyncio
import time

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerType

from gatewayd.config import BusSection, Config, DeviceSection
from gatewayd.errors import GatewayError

# Exception codes that a retry cannot fix: the request itself is wrong for this device.
PERMANENT = {1: "illegal function", 2: "illegal data address", 3: "illegal data value"}
TRANSIENT = {
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class DeviceError(GatewayError):
    """The device answered with a Modbus exception, or with data that does not fit."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code

    @property
    def permanent(self) -> bool:
        return self.code in PERMANENT


async def _read(
    client: AsyncModbusTcpClient | AsyncModbusSerialClient, table: str, address: int, count: int, unit: int
) -> list[int] | list[bool]:
    method = {
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
    }[table]
    response = await method(address, count=count, device_id=unit)
    if response.isError():
        code = getattr(response, "exception_code", None)
        name = PERMANENT.get(code) or TRANSIENT.get(code) or "unknown"
        raise DeviceError(f"Modbus exception {code} ({name}) reading {table} {address}..{address + count - 1}", code)
    # A device that answers with fewer values than asked (or more) sent data that does not
    # fit the request: its failure, never a decoding error further on.
    if table in ("coil", "discrete"):
        if len(response.bits) < count:
            raise DeviceError(f"{len(response.bits)} bits in answer to {count} asked from {table} {address}")
        return list(response.bits[:count])
    if len(response.registers) != count:
        raise DeviceError(f"{len(response.registers)} registers in answer to {count} asked from {table} {address}")
    return list(response.registers)


class TcpEndpoint:
    """One Modbus TCP server and the connections to it, shared by the devices (unit ids) on it."""

    def __init__(self, host: str, port: int, *, connections: int = 1, timeout_s: float = 1.0):
        self.host, self.port = host, port
        self.timeout_s = timeout_s  # the longest of its units' request timeouts
        self.slots: asyncio.Queue[AsyncModbusTcpClient | None] = asyncio.Queue()
        for _ in range(connections):
            self.slots.put_nowait(None)  # connected on first use
        self.clients: set[AsyncModbusTcpClient] = set()

    async def ensure_connected(self) -> None:
        """Raise ConnectionError when the server cannot be reached now."""
        client = await self.slots.get()
        try:
            client = await self._connected(client)
        finally:
            self.slots.put_nowait(client)

    async def request(
        self, table: str, address: int, count: int, unit: int, timeout_s: float
    ) -> list[int] | list[bool]:
        client = await self.slots.get()  # waiting for a free connection is not the unit's time
        try:
            client = await self._connected(client)
            try:
                async with asyncio.timeout(timeout_s):
                    return await _read(client, table, address, count, unit)
            except TimeoutError:
                raise DeviceError(f"unit {unit} did not answer within {timeout_s:g} s") from None
        except (ConnectionError, ConnectionException, ModbusIOException, OSError):
            self._drop(client)  # the next request connects afresh
            client = None
            raise
        finally:
            self.slots.put_nowait(client)

    async def _connected(self, client: AsyncModbusTcpClient | None) -> AsyncModbusTcpClient:
        if client is not None and client.connected:
            return client
        self._drop(client)
        # Reconnection is the pollers' (with health tracking), so pymodbus' own is off. Its
        # timeout is past every unit's own, which ends a request first: a silent unit must not
        # look like a dead connection (pymodbus closes one after a few timeouts in a row).
        client = AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.timeout_s + 1.0, retries=0, reconnect_delay=0
        )
        if not await client.connect():
            client.close()
            raise ConnectionError(f"cannot connect to {self.host}:{self.port}")
        self.clients.add(client)
        return client

    def _drop(self, client: AsyncModbusTcpClient | None) -> None:
        if client is not None:
            self.clients.discard(client)
            client.close()

    def close(self) -> None:
        for client in list(self.clients):
            self._drop(client)


class TcpLink:
    """A device (unit id) behind a TCP endpoint. Closing it leaves the endpoint to the others."""

    def __init__(self, device: DeviceSection, endpoint: TcpEndpoint | None = None):
        assert device.host is not None
        self.device = device
        self.endpoint = endpoint or TcpEndpoint(device.host, device.port, timeout_s=device.timeout_s)
        self.address = f"tcp://{device.host}:{device.port}/{device.unit}"

    async def ensure_connected(self) -> None:
        await self.endpoint.ensure_connected()

    async def read(self, table: str, address: int, count: int, unit: int) -> list[int] | list[bool]:
        return await self.endpoint.request(table, address, count, unit, self.device.timeout_s)

    def close(self) -> None:
        pass


class RtuBus:
    """One serial line and its single client; requests from all its devices take turns."""

    def __init__(self, bus: BusSection):
        self.bus = bus
        self.lock = asyncio.Lock()
        # 3.5 character times of silence between frames (11 bits each), 1.75 ms above 19200 baud
        self.gap_s = 38.5 / bus.baud if bus.baud <= 19200 else 0.00175
        self._last_end = 0.0
        self.client: AsyncModbusSerialClient | None = None

    async def ensure_connected(self) -> None:
        if self.client is not None and self.client.connected:
            return
        self.close()
        self.client = AsyncModbusSerialClient(
            self.bus.port,
            framer=FramerType.RTU,
            baudrate=self.bus.baud,
            bytesize=8,
            parity=self.bus.parity,
            stopbits=self.bus.stop_bits,
            timeout=self.bus.timeout_s,
            retries=0,
            reconnect_delay=0,
        )
        if not await self.client.connect():
            raise ConnectionError(f"cannot open serial port {self.bus.port}")

    async def request(self, table: str, address: int, count: int, unit: int) -> list[int] | list[bool]:
        async with self.lock:
            await self.ensure_connected()
            wait = self._last_end + self.gap_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                assert self.client is not None
                return await _read(self.client, table, address, count, unit)
            finally:
                self._last_end = time.monotonic()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class RtuLink:
    """A device on a shared bus. Closing it leaves the bus open for the others."""

    def __init__(self, device: DeviceSection, bus: RtuBus):
        self.device = device
        self.bus = bus
        self.address = f"rtu://{bus.bus.port}/{device.unit}"

    async def ensure_connected(self) -> None:
        async with self.bus.lock:
            await self.bus.ensure_connected()

    async def read(self, table: str, address: int, count: int, unit: int) -> list[int] | list[bool]:
        return await self.bus.request(table, address, count, unit)

    def close(self) -> None:
        pass


Link = TcpLink | RtuLink


class Links:
    """Every device's link from the configuration: one endpoint per TCP server, one bus per serial line."""

    def __init__(self, config: Config):
        self.buses = {b.name: RtuBus(b) for b in config.buses}
        self.endpoints = {
            key: TcpEndpoint(*key, connections=n, timeout_s=timeout_s)
            for key, (n, timeout_s) in config.tcp_endpoints().items()
        }

    def of(self, device: DeviceSection) -> Link:
        if device.transport == "rtu" and device.bus:
            return RtuLink(device, self.buses[device.bus])
        return TcpLink(device, self.endpoints[(device.host or "", device.port)])

    def close(self) -> None:
        for bus in self.buses.values():
            bus.close()
        for endpoint in self.endpoints.values():
            endpoint.close()
