"""`gatewayd probe`: read a device, or one register given on the command line, once, and print
what it holds, so a commissioning engineer sees whether the addresses and the orders are
right before the daemon polls it. A 32-bit value is shown in all four word and byte orders,
the configured (or asked) one first; a Modbus exception, a timeout or a refused connection
is named and exits 1."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import Literal, cast

from gatewayd.acquisition.links import DeviceError, Links, TcpLink
from gatewayd.acquisition.poller import make_profile
from gatewayd.acquisition.registers import decode, words_for
from gatewayd.cli.parsers import add_command, add_config_option, command_texts
from gatewayd.config import ConfigError, DataType, DeviceSection, RegisterSection, load_config

TEXTS = command_texts("gatewayd.cli")
ORDERS = [("big", "big", "ABCD"), ("little", "big", "CDAB"), ("big", "little", "BADC"), ("little", "little", "DCBA")]
TABLES = ("holding", "input", "coil", "discrete")
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def add_parser(sub: argparse._SubParsersAction) -> None:
    probe = add_command(sub, "probe", TEXTS)
    probe.add_argument("device", nargs="?", help="a device of the configuration: read it as the daemon would")
    add_config_option(probe)
    probe.add_argument("--host", help="read one register of this Modbus TCP server instead")
    probe.add_argument("--port", type=int, default=502)
    probe.add_argument("--unit", type=int, default=1, help="Modbus unit id (default: %(default)s)")
    probe.add_argument("--timeout", type=float, default=2.0, help="seconds (default: %(default)s)")
    probe.add_argument(
        "--register",
        metavar="TABLE:ADDRESS[:TYPE]",
        help="holding|input|coil|discrete, the 0-based protocol address, uint16 (default) int16 uint32 int32 "
        "float32 float64 bit; e.g. holding:100:float32",
    )


Table = Literal["holding", "input", "coil", "discrete"]


@dataclass(frozen=True)
class Spec:
    table: Table
    address: int
    type: DataType


def parse_spec(text: str) -> Spec:
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in TABLES:
        raise ValueError(f"{text!r}: expected TABLE:ADDRESS[:TYPE] with TABLE one of {', '.join(TABLES)}")
    try:
        address = int(parts[1], 0)
    except ValueError:
        raise ValueError(f"{text!r}: the address {parts[1]!r} is not a number") from None
    bits = parts[0] in ("coil", "discrete")
    data_type = parts[2] if len(parts) == 3 else ("bit" if bits else "uint16")
    if (data_type == "bit") != bits:
        raise ValueError(f"{text!r}: coils and discrete inputs are bits; registers are not")
    if data_type != "bit":
        words_for(data_type)  # KeyError for an unknown type
    if not 0 <= address <= 65535:
        raise ValueError(f"{text!r}: a protocol address is 0 to 65535")
    return Spec(cast(Table, parts[0]), address, cast(DataType, data_type))


def run(args: argparse.Namespace) -> int:
    try:
        if args.host:
            if not args.register:
                raise ValueError("--host needs --register")
            spec = parse_spec(args.register)
            if hint := plc_number_hint(spec):
                print(hint, file=sys.stderr)
            device = DeviceSection(
                name="probe",
                profile="generic",
                host=args.host,
                port=args.port,
                unit=args.unit,
                timeout_s=args.timeout,
                registers=[RegisterSection(name="value", table=spec.table, address=spec.address, type=spec.type)],
            )
            lines = asyncio.run(_probe_register(device, spec))
        elif args.device:
            config = load_config(args.config)
            found = [d for d in config.devices if d.name == args.device]
            if not found:
                names = ", ".join(d.name for d in config.devices)
                raise ValueError(f"no device {args.device!r} in {args.config} (it has: {names})")
            lines = asyncio.run(_probe_device(Links(config), found[0]))
        else:
            raise ValueError("name a device of the configuration, or give --host and --register")
    except (ConfigError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (DeviceError, ConnectionError, OSError, TimeoutError) as exc:
        print(f"error: {_failure(exc)}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(lines))
    return 0


def _failure(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, DeviceError | ConnectionError) else f"{type(exc).__name__}: {text}"


async def _probe_register(device: DeviceSection, spec: Spec) -> list[str]:
    link = TcpLink(device)
    try:
        await link.ensure_connected()
        count = 1 if spec.type == "bit" else words_for(spec.type)
        raw = await link.read(spec.table, spec.address, count, device.unit)
    finally:
        link.endpoint.close()
    lines = [f"{link.address} {spec.table} {spec.address}" + (f"..{spec.address + count - 1}" if count > 1 else "")]
    return lines + _shown(spec.type, raw, "big", "big")


def plc_number_hint(spec: Spec) -> str | None:
    """A 30001/40001-style number is a PLC manual's 1-based register number, not an address."""
    if spec.table not in ("holding", "input") or not 30001 <= spec.address <= 49999:
        return None
    table, base = ("holding", 40001) if spec.address >= 40001 else ("input", 30001)
    return (
        f"note: {spec.address} looks like a register number from a PLC manual: its protocol address is "
        f"{table}:{spec.address - base}"
    )


async def _probe_device(links: Links, device: DeviceSection) -> list[str]:
    link = links.of(device)
    profile = make_profile(device)
    try:
        await link.ensure_connected()
        info, channels = await profile.describe(link, device.unit)
        values = dict(await profile.read(link, device.unit))
        lines = [f"{device.name} ({link.address}), {device.profile}"]
        units = dict(channels)
        for name, value in values.items():
            lines.append(f"  {name} = {value:g} {units.get(name, '')}".rstrip())
        for r in device.registers:  # a generic device's 32-bit values: the other orders beside
            if r.type in ("int32", "uint32", "float32"):
                raw = await link.read(r.table, r.address, 2, device.unit)
                lines.append(f"  {r.name}, {r.table} {r.address}..{r.address + 1}:")
                lines += ["  " + line for line in _shown(r.type, raw, r.word_order, r.byte_order)]
    finally:
        links.close()
    return lines


def _shown(data_type: str, raw: list, word_order: str, byte_order: str) -> list[str]:
    if data_type == "bit":
        return [f"  bit: {int(bool(raw[0]))}"]
    words = " ".join(f"0x{w:04X}" for w in raw)
    if data_type not in ("int32", "uint32", "float32"):
        return [f"  words {words}: {data_type} {decode(raw, 0, data_type):g}"]
    lines = [f"  words {words}:"]
    first = [o for o in ORDERS if (o[0], o[1]) == (word_order, byte_order)]
    for words_order, bytes_order, name in first + [o for o in ORDERS if o not in first]:
        value = decode(raw, 0, data_type, word_order=words_order, byte_order=bytes_order)  # type: ignore[arg-type]
        mark = "  <- configured" if (words_order, bytes_order) == (word_order, byte_order) else ""
        lines.append(f"    {data_type} {name} (word_order {words_order}, byte_order {bytes_order}): {value:g}{mark}")
    return lines
