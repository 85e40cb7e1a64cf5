"""The bench under test: the node (its inventory entry and console port), the deploy that
put it there, the Modbus link to it, and the I/O rig. Built by conftest.py for a real board
(`--port`) or for the virtual board."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

from gatewayd.acquisition.profiles import edge_node as reg
from hil_tests.link import NodeLink
from hil_tests.rig import Rig
from edge_flash.deploy import DeployReport
from edge_flash.device import Device
from edge_flash.inventory import NodePlan

T = TypeVar("T")


class Fault(NamedTuple):
    kind: str  # what the rig does: value, ramp, stuck
    size: float
    check: str  # the node's check that must trip on it
    samples: int  # samples that check needs to see the fault


# The virtual bench's node: the simulated pump's temperature is the channel under test (its
# signal moves slowly, so a rate limit of 1 degree per half second never fires on its own;
# every check critical, one sample enough) and trips the pump; pressure rides along.
VIRTUAL_INVENTORY = """\
[defaults]
board = "virtual"
sample_period_ms = {period_ms}
reset_code = 4242
watchdog_ms = {watchdog_ms}
outputs = [{{ name = "pump_enable", pin = 25 }}]

[defaults.modbus]
tcp = {{ port = {tcp_port} }}
rtu = {{ device = "{rtu_device}", baud = 19200, parity = "N" }}  # a pty carries no parity

[[defaults.channels]]
name = "temperature"
unit = "C"
source = {{ type = "sim", signal = 2 }}
resolution = 0.01
physical = [-40, 125]
bounds = [0.0, 60.0]
zscore = {{ window = 16, threshold = 6.0, tunable = [3.0, 8.0] }}
rate = {{ limit = 1.0, horizon_s = 0.5 }}
consecutive = 1
severity = {{ stuck = "critical", rate = "critical" }}
trips = ["pump_enable"]

[[defaults.channels]]
name = "pressure"
unit = "bar"
source = {{ type = "sim", signal = 0 }}
resolution = 0.001
physical = [0, 16]
bounds = [0.2, 8.0]
zscore = {{ window = 16, threshold = 6.0, tunable = [3.0, 8.0] }}
consecutive = 3

[[nodes]]
id = "bench-1"
unit = 7
"""


@dataclass
class Bench:
    plan: NodePlan
    port: str  # the node's console
    link: NodeLink
    rig: Rig | None
    deploy: DeployReport | None
    virtual: bool
    rtu: NodeLink | None = None  # a second link over RTU, when the bench has both
    console_log: Path | None = None  # everything the virtual board printed
    channel: int = 0  # the channel the rig drives
    frames: int = 10_000
    rtu_frames: int = 10_000
    slack_s: float = 0.025

    @property
    def period_s(self) -> float:
        return self.plan.config.get("sample_period_ms", 100) / 1000

    @property
    def watchdog_s(self) -> float:
        return self.plan.config.get("watchdog_ms", 0) / 1000

    @property
    def reset_code(self) -> int:
        return self.plan.config["reset_code"]

    @property
    def channel_config(self) -> dict:
        return self.plan.config["channels"][self.channel]

    @property
    def output(self) -> str:
        """The safety output the channel under test trips."""
        return self.channel_config["trips"][0]

    @property
    def window(self) -> int:
        return self.channel_config.get("zscore", {}).get("window", 32)

    def links(self) -> dict[str, NodeLink]:
        """The bench's Modbus links by transport."""
        found = {self.link.transport: self.link}
        if self.rtu is not None:
            found["rtu"] = self.rtu
        return found

    def console(self) -> Device:
        return Device(self.port)

    def wait(self, what: str, probe: Callable[[], T | None], timeout_s: float, every_s: float = 0.02) -> T:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = probe()
            except ConnectionError:
                value = None  # the node is rebooting
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout_s:g} s")
            time.sleep(every_s)

    def ready_s(self) -> float:
        """Time a healthy node needs after a (re)start: every window full, outputs on."""
        return 3.0 + 2 * self.window * self.period_s

    def settle_s(self) -> float:
        """How long the channel's checks look back: a released fault still fires the rate
        check when it leaves the horizon (the value now against the value then)."""
        ch = self.channel_config
        horizon = round(ch["rate"]["horizon_s"] / self.period_s) if ch.get("rate") else 0
        return (horizon + ch.get("consecutive", 1) + 1) * self.period_s

    def wait_quiet(self) -> None:
        """Until the channel under test has been clear of every check for settle_s()."""
        deadline = time.monotonic() + self.ready_s() + self.settle_s()
        quiet_since = None
        while True:
            now = time.monotonic()
            try:
                severity = self.link.channel(self.channel).severity
            except ConnectionError:
                severity = None  # rebooting
            if severity != 0:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= self.settle_s():
                return
            if now > deadline:
                raise AssertionError(f"channel {self.channel} not clear of its checks for {self.settle_s():g} s")
            time.sleep(self.period_s / 2)

    def make_healthy(self) -> None:
        """Rig released, trip cleared, outputs energised: where every trip case starts."""
        assert self.rig is not None
        self.rig.release(self.channel)
        self.wait_quiet()
        if self.link.status().latched:
            assert self.link.write_reset(self.reset_code) == 0
        self.wait(f"{self.output} energised", lambda: self.rig.output(self.output), self.ready_s())

    def faults(self) -> dict[str, Fault]:
        """The faults the rig injects into the channel under test, sized from its configuration."""
        ch = self.channel_config
        high, top = ch["bounds"][1], ch["physical"][1]
        consecutive = ch.get("consecutive", 1)
        found = {
            # beyond the high bound, still inside what the sensor can read (else it is a sensor fault)
            "out-of-bound": Fault("value", high + 0.2 * (top - high), "high", consecutive),
            # zero variance in the window before a sample: the first sample after a full window held
            "stuck": Fault("stuck", 0.0, "stuck", self.window + consecutive),
        }
        if ch.get("rate"):  # each step twice the rate limit: caught at the first, far from the bounds
            found["fast-ramp"] = Fault("ramp", 2 * ch["rate"]["limit"] / self.period_s, "rate", consecutive)
        return found

    def cause(self) -> tuple[int, str]:
        value = self.link.status()[reg.IR_TRIP_CAUSE]
        check = value & 0xFF
        return value >> 8, reg.CHECK_NAMES[check] if check < len(reg.CHECK_NAMES) else f"check {check}"
