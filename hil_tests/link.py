"""The bench's Modbus connection to the node under test: Modbus TCP (Wi-Fi, or the virtual
board on loopback) or RTU through a USB-RS485 adapter, read with pymodbus; and the raw line
underneath, for frames no well-behaved master would send."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import serial
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from gatewayd.acquisition.profiles import edge_node as reg


@dataclass(frozen=True)
class Status:
    """The node's identity and status block (input registers 0..23)."""

    registers: list[int]

    def __getitem__(self, address: int) -> int:
        return self.registers[address]

    def u32(self, address: int) -> int:
        return self.registers[address] << 16 | self.registers[address + 1]

    @property
    def uptime_s(self) -> int:
        return self.u32(reg.IR_UPTIME_S)

    @property
    def samples(self) -> int:
        return self.u32(reg.IR_SAMPLE_COUNT)

    @property
    def bad_frames(self) -> int:
        return self.u32(reg.IR_BAD_FRAMES)

    @property
    def trips(self) -> int:
        return self.u32(reg.IR_TRIPS)

    @property
    def latched(self) -> int:
        return self.registers[reg.IR_TRIP_LATCHED]


@dataclass(frozen=True)
class ChannelState:
    value: float
    flags: int
    severity: int


class NodeLink:
    def __init__(
        self,
        transport: str,
        unit: int,
        *,
        host: str = "",
        port: int = 502,
        device: str = "",
        baud: int = 19200,
        parity: str = "E",
        stop_bits: int = 1,
        timeout_s: float = 1.0,
    ):
        self.transport = transport
        self.unit = unit
        self.host, self.port = host, port
        self.device, self.baud, self.parity, self.stop_bits = device, baud, parity, stop_bits
        self.timeout_s = timeout_s
        if transport == "tcp":
            self.client: ModbusTcpClient | ModbusSerialClient = ModbusTcpClient(host, port=port, timeout=timeout_s)
        else:
            self.client = ModbusSerialClient(
                device,
                framer=FramerType.RTU,
                baudrate=baud,
                parity=parity,
                stopbits=stop_bits,
                timeout=timeout_s,
                retries=1,
            )

    @property
    def name(self) -> str:
        return f"Modbus TCP {self.host}:{self.port}" if self.transport == "tcp" else f"Modbus RTU {self.device}"

    def close(self) -> None:
        self.client.close()

    def _ensure(self) -> None:
        if not self.client.connected and not self.client.connect():
            raise ConnectionError(f"{self.name}: cannot connect")

    def inputs(self, address: int, count: int) -> list[int]:
        self._ensure()
        try:
            reply = self.client.read_input_registers(address, count=count, device_id=self.unit)
        except ModbusException as exc:
            self.client.close()  # the node went away (a reset): connect afresh next time
            raise ConnectionError(f"{self.name}: {exc}") from None
        if reply.isError():
            raise ConnectionError(f"{self.name}: reading input registers {address}+{count}: {reply}")
        return list(reply.registers)

    def status(self) -> Status:
        return Status(self.inputs(0, reg.IDENTITY_REGISTERS))

    def channel(self, index: int) -> ChannelState:
        r = self.inputs(reg.IR_CHANNEL_BASE + index * reg.IR_CHANNEL_STRIDE, reg.IR_CHANNEL_STRIDE)
        value = struct.unpack(">f", struct.pack(">HH", r[reg.CH_VALUE], r[reg.CH_VALUE + 1]))[0]
        return ChannelState(value, r[reg.CH_FLAGS], r[reg.CH_SEVERITY])

    def channel_names(self, count: int) -> list[str]:
        address, span = reg.descriptor_span(count)
        return [c.name for c in reg.parse_descriptors(self.inputs(address, span), count)]

    def write_reset(self, code: int) -> int:
        """Write the reset code; returns 0, or the exception code the node answered."""
        self._ensure()
        try:
            reply = self.client.write_register(reg.HR_RESET, code, device_id=self.unit)
        except ModbusException as exc:
            self.client.close()
            raise ConnectionError(f"{self.name}: {exc}") from None
        return reply.exception_code if reply.isError() else 0

    # -- the raw line --------------------------------------------------------------------

    def raw_tcp(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def raw_serial(self) -> serial.Serial:
        self.client.close()  # one opener of the adapter at a time
        return serial.Serial(
            self.device, baudrate=self.baud, parity=self.parity, stopbits=self.stop_bits, timeout=self.timeout_s
        )
