"""Profile for the project's own nodes: register map version 1 of firmware/REGISTERS.md.

The numbers mirror firmware/regmap.py; tests/gatewayd/acquisition/test_edge_node_profile.py runs the
firmware module in MicroPython and checks that both sides agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gatewayd.acquisition.registers import decode, decode_text
from gatewayd.errors import GatewayError

MAGIC = 0x4544
MAP_VERSION = 1

IR_MAGIC = 0
IR_MAP_VERSION = 1
IR_FW_VERSION = 2
IR_NODE_ID = 3
IR_CHANNEL_COUNT = 4
IR_NODE_STATUS = 5
IR_UPTIME_S = 6
IR_SAMPLE_COUNT = 8
IR_SAMPLE_PERIOD_MS = 10
IR_OVERRUNS = 11
IR_TRIP_LATCHED = 12
IR_TRIP_CAUSE = 13
IR_DETECTIONS = 14
IR_TRIPS = 16
IR_BAD_FRAMES = 18
IR_CONFIG_ERROR = 20
IR_OUTPUTS_ENERGISED = 21
IR_OUTPUT_COUNT = 22
IR_RESET_REJECTS = 23
IDENTITY_REGISTERS = 24

IR_CHANNEL_BASE = 100
IR_CHANNEL_STRIDE = 10
CH_VALUE = 0
CH_ZSCORE = 2
CH_MEAN = 4
CH_FLAGS = 6
CH_SEVERITY = 7
CH_RAW_FLAGS = 8

HR_RESET = 0
HR_CHANNEL_BASE = 16
HR_CHANNEL_STRIDE = 8
HR_LOW = 0
HR_HIGH = 2
HR_RATE_LIMIT = 4
HR_Z_THRESHOLD = 6

STATUS_RUNNING = 0x0001
STATUS_CONFIG_ERROR = 0x0002
STATUS_SAFE_STATE = 0x0004
STATUS_TRIP_LATCHED = 0x0008
STATUS_NOT_READY = 0x0010
STATUS_WATCHDOG = 0x0020

IR_DESCRIPTOR_BASE = 300
IR_DESCRIPTOR_STRIDE = 8
DESC_NAME_REGS = 6
DESC_UNIT = 6
DESC_UNIT_REGS = 2

MAX_CHANNELS = 16
MAX_READ = 125


class ProfileError(GatewayError, ValueError):
    """The device does not look like a node with a register map this gateway understands."""


@dataclass(frozen=True)
class Channel:
    name: str
    unit: str


@dataclass(frozen=True)
class Identity:
    node_id: int
    map_version: int
    firmware_version: str
    channel_count: int
    sample_period_ms: int


@dataclass(frozen=True)
class ChannelSample:
    value: float
    zscore: float
    mean: float
    flags: int
    severity: int


def parse_identity(registers: Sequence[int]) -> Identity:
    if len(registers) < IDENTITY_REGISTERS:
        raise ProfileError(f"identity block needs {IDENTITY_REGISTERS} registers, got {len(registers)}")
    if registers[IR_MAGIC] != MAGIC:
        raise ProfileError(f"register {IR_MAGIC} holds {registers[IR_MAGIC]:#06x}, not the node magic {MAGIC:#06x}")
    version = registers[IR_MAP_VERSION]
    if version != MAP_VERSION:
        raise ProfileError(f"register map version {version} is not supported (this gateway reads {MAP_VERSION})")
    count = registers[IR_CHANNEL_COUNT]
    if not 0 < count <= MAX_CHANNELS:
        raise ProfileError(f"channel count {count} is outside 1..{MAX_CHANNELS}")
    fw = registers[IR_FW_VERSION]
    return Identity(
        node_id=registers[IR_NODE_ID],
        map_version=version,
        firmware_version=f"{fw >> 8}.{fw & 0xFF}",
        channel_count=count,
        sample_period_ms=registers[IR_SAMPLE_PERIOD_MS],
    )


def descriptor_span(channel_count: int) -> tuple[int, int]:
    return IR_DESCRIPTOR_BASE, channel_count * IR_DESCRIPTOR_STRIDE


def parse_descriptors(registers: Sequence[int], channel_count: int) -> list[Channel]:
    channels = []
    for i in range(channel_count):
        base = i * IR_DESCRIPTOR_STRIDE
        name = decode_text(registers[base : base + DESC_NAME_REGS])
        unit = decode_text(registers[base + DESC_UNIT : base + DESC_UNIT + DESC_UNIT_REGS])
        channels.append(Channel(name=name or f"ch{i}", unit=unit))
    names = [c.name for c in channels]
    if len(set(names)) != len(names):
        raise ProfileError(f"channel names are not unique: {names}")
    return channels


def channel_spans(channel_count: int) -> list[tuple[int, int]]:
    """(address, count) requests covering every channel block, each at most 125 registers."""
    per_request = MAX_READ // IR_CHANNEL_STRIDE
    spans = []
    for first in range(0, channel_count, per_request):
        n = min(per_request, channel_count - first)
        spans.append((IR_CHANNEL_BASE + first * IR_CHANNEL_STRIDE, n * IR_CHANNEL_STRIDE))
    return spans


def parse_channels(registers: Sequence[int], channel_count: int) -> list[ChannelSample]:
    if len(registers) < channel_count * IR_CHANNEL_STRIDE:
        raise ProfileError(
            f"{channel_count} channels need {channel_count * IR_CHANNEL_STRIDE} registers, got {len(registers)}"
        )
    samples = []
    for i in range(channel_count):
        base = i * IR_CHANNEL_STRIDE
        samples.append(
            ChannelSample(
                value=float(decode(registers, base + CH_VALUE, "float32")),
                zscore=float(decode(registers, base + CH_ZSCORE, "float32")),
                mean=float(decode(registers, base + CH_MEAN, "float32")),
                flags=registers[base + CH_FLAGS],
                severity=registers[base + CH_SEVERITY],
            )
        )
    return samples


SEVERITY_NAMES = {1: "warning", 2: "critical"}
CHECK_NAMES = ("fault", "stuck", "low", "high", "zscore", "rate")


@dataclass(frozen=True)
class EdgeEvent:
    """A channel's on-node severity changed (or was seen for the first time): the node's own
    detectors fired, or stopped. `severity` is None when no check is active any more."""

    channel: str
    severity: str | None
    checks: tuple[str, ...]
    value: float


def checks_of(flags: int) -> tuple[str, ...]:
    return tuple(name for bit, name in enumerate(CHECK_NAMES) if flags & (1 << bit))


class EdgeNodeProfile:
    """Reads the node's identity and channel names once per connection, then its channel block;
    a channel's severity changing on the node (and every channel's first reading, so that a
    restarted gateway learns which conditions still hold) becomes an edge event."""

    def __init__(self) -> None:
        self.channels: list[Channel] = []
        self.severity: dict[str, int] = {}  # kept across reconnects: a change is a change
        self.events: list[EdgeEvent] = []

    async def describe(self, link, unit: int) -> tuple[dict, list[tuple[str, str]]]:
        identity = parse_identity(await link.read("input", 0, IDENTITY_REGISTERS, unit))
        address, count = descriptor_span(identity.channel_count)
        self.channels = parse_descriptors(await link.read("input", address, count, unit), identity.channel_count)
        info = {
            "node_id": identity.node_id,
            "map_version": identity.map_version,
            "firmware_version": identity.firmware_version,
            "sample_period_ms": identity.sample_period_ms,
        }
        return info, [(c.name, c.unit) for c in self.channels]

    async def read(self, link, unit: int) -> list[tuple[str, float]]:
        registers: list[int] = []
        for address, count in channel_spans(len(self.channels)):
            registers += await link.read("input", address, count, unit)
        samples = parse_channels(registers, len(self.channels))
        self.events = []
        for c, sample in zip(self.channels, samples):
            now = sample.severity if sample.severity in SEVERITY_NAMES else 0
            before = self.severity.get(c.name)
            if now != before:
                self.events.append(EdgeEvent(c.name, SEVERITY_NAMES.get(now), checks_of(sample.flags), sample.value))
            self.severity[c.name] = now
        return [(c.name, s.value) for c, s in zip(self.channels, samples)]
