"""Modbus links: how a poller reaches its device. TCP: one client per device. RTU: one client
per serial bus, shared by its devices under one lock, with the inter-frame pause the spec
requires, so one bus never carries two requests at once."""

from __future__ import annotations

import asyncio
import time

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.framer import FramerType

from gatewayd.config import BusSection, DeviceSection
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


class _Link:
    client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None

    async def _call(self, table: str, address: int, count: int, unit: int) -> list[int] | list[bool]:
        assert self.client is not None
        method = {
            "holding": self.client.read_holding_registers,
            "input": self.client.read_input_registers,
            "coil": self.client.read_coils,
            "discrete": self.client.read_discrete_inputs,
        }[table]
        response = await method(address, count=count, device_id=unit)
        if response.isError():
            code = getattr(response, "exception_code", None)
            name = PERMANENT.get(code) or TRANSIENT.get(code) or "unknown"
            raise DeviceError(
                f"Modbus exception {code} ({name}) reading {table} {address}..{address + count - 1}", code
            )
        # A device that answers with fewer values than asked (or more) sent data that does not
        # fit the request: its failure, never a decoding error further on.
        if table in ("coil", "discrete"):
            if len(response.bits) < count:
                raise DeviceError(f"{len(response.bits)} bits in answer to {count} asked from {table} {address}")
            return list(response.bits[:count])
        if len(response.registers) != count:
            raise DeviceError(f"{len(response.registers)} registers in answer to {count} asked from {table} {address}")
        return list(response.registers)


class TcpLink(_Link):
    def __init__(self, device: DeviceSection):
        assert device.host is not None
        self.device = device
        self.address = f"tcp://{device.host}:{device.port}/{device.unit}"

    async def ensure_connected(self) -> None:
        if self.client is not None and self.client.connected:
            return
        self.close()
        # Reconnection is the poller's (with health tracking), so pymodbus' own is off.
        self.client = AsyncModbusTcpClient(
            self.device.host, port=self.device.port, timeout=self.device.timeout_s, retries=0, reconnect_delay=0
        )
        if not await self.client.connect():
            raise ConnectionError(f"cannot connect to {self.device.host}:{self.device.port}")

    async def read(self, table: str, address: int, count: int, unit: int) -> list[int] | list[bool]:
        return await self._call(table, address, count, unit)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class RtuBus(_Link):
    """One serial line and its single client; requests from all its devices take turns."""

    def __init__(self, bus: BusSection):
        self.bus = bus
        self.lock = asyncio.Lock()
        # 3.5 character times of silence between frames (11 bits each), 1.75 ms above 19200 baud
        self.gap_s = 38.5 / bus.baud if bus.baud <= 19200 else 0.00175
        self._last_end = 0.0

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
                return await self._call(table, address, count, unit)
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
