"""Many Modbus TCP devices in one process, for polling benchmarks: each port answers function
codes 3 and 4 from a register image whose float32 values change on every read.

    python bench/modbus_farm.py --devices 100 --first-port 15100

Prints READY when all ports listen; runs until terminated."""

from __future__ import annotations

import argparse
import asyncio
import math
import struct
import time

REGISTERS = 250


class Device(asyncio.Protocol):
    def __init__(self, index: int):
        self.index = index
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 12:
            tid, _proto, length, unit = struct.unpack(">HHHB", self.buffer[:7])
            frame, self.buffer = self.buffer[: 6 + length], self.buffer[6 + length :]
            function, address, count = struct.unpack(">BHH", frame[7:12])
            if function not in (3, 4) or address + count > REGISTERS:
                pdu = bytes([function | 0x80, 2])
            else:
                t = time.time()
                values = [20 + self.index + math.sin(t + i) for i in range(REGISTERS // 2)]
                regs = struct.pack(">%df" % len(values), *values)[2 * address : 2 * (address + count)]
                pdu = bytes([function, 2 * count]) + regs
            assert self.transport is not None
            self.transport.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)


async def main(devices: int, first_port: int) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for i in range(devices):
        servers.append(await loop.create_server(lambda i=i: Device(i), "127.0.0.1", first_port + i))
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--first-port", type=int, default=15100)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.devices, args.first_port))
    except KeyboardInterrupt:
        pass
