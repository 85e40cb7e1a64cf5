# Hardware layer for the MicroPython unix port: the virtual node and the virtual board.
# Same interface as hal_esp32: outputs, flash, watchdog, reset input, sensor sampler and
# Modbus transports; sensors are simulated (pump plant, scenario faults) or replayed.
import os
import time

import plant
from detectors import INPUT_MISSING, INPUT_OK
from flashfs import Flash


class Output:
    """A safety output; its state is mirrored to a file so a test rig can read it."""

    def __init__(self, name, path=None):
        self.name = name
        self.path = path
        self.energised = False
        self.changes = 0

    def set(self, energised):
        if energised != self.energised:
            self.energised = energised
            self.changes += 1
            if self.path:
                with open(self.path, "w") as f:
                    f.write("1" if energised else "0")


class Watchdog:
    """Records feeds; `starved()` tells whether a real WDT would have reset the board. With a
    `path`, arming writes the timeout to that file and every feed rewrites it in place: the
    virtual board resets the process when the file grows older than the timeout, as a real
    WDT would. The file stays open and is never truncated, so a Ctrl-C in mid-feed cannot
    leave it empty (which would read as disarmed)."""

    def __init__(self, timeout_ms, path=None):
        self.timeout_ms = timeout_ms
        self.last_feed = time.ticks_ms()
        self.feeds = 0
        self.file = None
        if path:
            self.text = b"%d" % timeout_ms
            self.file = open(path, "wb")  # noqa: SIM115 -- open for the board's life: feeds rewrite it in place
            self.file.write(self.text)

    def feed(self):
        self.last_feed = time.ticks_ms()
        self.feeds += 1
        if self.file is not None:
            self.file.seek(0)
            self.file.write(self.text)  # same bytes: only the modification time moves

    def starved(self):
        return time.ticks_diff(time.ticks_ms(), self.last_feed) > self.timeout_ms


class ResetInput:
    """The local reset button: a file whose content "1" means pressed."""

    def __init__(self, path=None):
        self.path = path
        self.forced = False

    def pressed(self):
        if self.forced:
            return True
        if not self.path:
            return False
        try:
            with open(self.path) as f:
                return f.read(1) == "1"
        except OSError:
            return False


KINDS = ("spike", "offset", "ramp", "stuck", "missing", "value")


class Scenario:
    """Faults injected into a simulated signal from sample `start` on.
    kinds: spike (add `size` once), offset (add `size`), ramp (add `size` per sample),
    stuck (hold the value), missing (no reading), value (read `size` instead)."""

    def __init__(self, channel, kind, start, size=0.0):
        if kind not in KINDS:
            raise ValueError("unknown fault %r" % kind)
        self.channel = channel
        self.kind = kind
        self.start = start
        self.size = size
        self.held = None


class SimSampler:
    """Channels fed by the simulated pump plant (`signal` picks the plant output), with
    optional scenario faults. Conversion to counts allocates here (floats), which is the
    simulation's cost, not the node's: on the ESP32 the ADC gives integers."""

    def __init__(self, channels, seed=1, dt_s=0.1, scenarios=(), rig=None):
        self.plant = plant.PumpPlant(seed=seed, dt_s=dt_s)
        self.channels = list(channels)  # its own list: the node releases the entries of the one it was given
        self.status = bytearray(len(channels))
        self.scenarios = list(scenarios)
        self.samples = 0
        self.rig = rig

    def update(self):
        self.plant.update()
        self.samples += 1
        if self.rig is not None:
            self.rig.take(self)

    def drive(self, channel, kind, size):
        """The rig takes over `channel` from this sample on (or, with kind "clear", gives
        it back to the plant); per-second ramps become per-sample steps."""
        self.scenarios = [sc for sc in self.scenarios if sc.channel != channel]
        if kind == "ramp":
            size = size * self.plant.dt
        if kind != "clear":
            self.scenarios.append(Scenario(channel, kind, self.samples, size))

    def read(self, index):
        ch = self.channels[index]
        value = self.plant.value(ch.source.params["signal"])
        self.status[index] = INPUT_OK
        for sc in self.scenarios:
            if sc.channel != index or self.samples < sc.start:
                continue
            if sc.kind == "spike" and self.samples == sc.start:
                value += sc.size
            elif sc.kind == "offset":
                value += sc.size
            elif sc.kind == "ramp":
                value += sc.size * (self.samples - sc.start + 1)
            elif sc.kind == "value":
                value = sc.size
            elif sc.kind == "stuck":
                if sc.held is None:
                    sc.held = value
                value = sc.held
            elif sc.kind == "missing":
                self.status[index] = INPUT_MISSING
                return 0
        return ch.counts(value)


class RigInput:
    """The virtual board's I/O rig: the rig replaces a file of commands atomically, one per
    line, `CHANNEL KIND [SIZE]` (KIND as in Scenario, or clear; a ramp's SIZE per second);
    the sampler takes it (removes it) at its next sample and applies it from that sample."""

    def __init__(self, path):
        self.path = path
        self.taken = 0

    def take(self, sampler):
        try:
            with open(self.path) as f:
                text = f.read()
        except OSError:
            return  # no new command
        os.remove(self.path)
        self.taken += 1
        for line in text.split("\n"):
            parts = line.split()
            if not parts:
                continue
            try:
                channel = int(parts[0])
                kind = parts[1]
                sized = kind in ("spike", "offset", "ramp", "value")
                size = float(parts[2]) if sized else 0.0
                if (kind != "clear" and kind not in KINDS) or not 0 <= channel < len(sampler.channels):
                    raise ValueError(line)
            except (ValueError, IndexError):
                print("rig: ignored %r" % line)
                continue
            sampler.drive(channel, kind, size)


class CsvSampler:
    """Channels replayed from a CSV file with a header row: each channel reads the column of
    its own name, one row per sample, from the top again at the end. An empty or non-numeric
    cell is a missing reading."""

    def __init__(self, channels, path):
        self.channels = list(channels)  # its own list: the node releases the entries of the one it was given
        self.path = path
        self.status = bytearray(len(channels))
        self.file = open(path)
        header = self.file.readline().strip().split(",")
        self.columns = []
        for ch in channels:
            if ch.name not in header:
                raise ValueError("%s: no column %r (columns: %s)" % (path, ch.name, ", ".join(header)))
            self.columns.append(header.index(ch.name))
        self.cells = []
        self.rows = 0

    def update(self):
        line = self.file.readline()
        if not line:
            self.file.seek(0)
            self.file.readline()
            line = self.file.readline()
        self.cells = line.strip().split(",")
        self.rows += 1

    def read(self, index):
        column = self.columns[index]
        try:
            value = float(self.cells[column])
        except (ValueError, IndexError):
            value = None
        if value is None or value != value:
            self.status[index] = INPUT_MISSING
            return 0
        self.status[index] = INPUT_OK
        return self.channels[index].counts(value)


class Board:
    def __init__(self, state_dir, port=None, bind="127.0.0.1", seed=1, scenarios=(), rtu_device=None, replay=None,
                 rig=None):
        self.replay = replay
        self.rig = rig
        self.state_dir = state_dir
        self.flash = Flash(state_dir)
        self.port = port
        self.bind = bind
        self.seed = seed
        self.scenarios = scenarios
        self.rtu_device = rtu_device
        self.reset_input = ResetInput(state_dir + "/reset")
        self.wdt = None
        self.out = []

    def outputs(self, specs):
        self.out = [Output(name, self.state_dir + "/output-" + name) for name, _, _ in specs]
        return self.out

    def watchdog(self, timeout_ms):
        self.wdt = Watchdog(timeout_ms)
        return self.wdt

    def sampler(self, channels, period_ms):
        if self.replay:
            return CsvSampler(channels, self.replay)
        for ch in channels:
            if ch.source.kind != "sim":
                raise ValueError("the unix port only simulates sensors; %s has source %s" % (ch.name, ch.source.kind))
        rig = RigInput(self.state_dir + "/" + self.rig) if self.rig else None
        return SimSampler(channels, seed=self.seed, dt_s=period_ms / 1000, scenarios=self.scenarios, rig=rig)

    def transports(self, slave, cfg):
        servers: list = []
        if cfg is None or cfg.tcp is not None or self.port is not None:
            from modbus_tcp import ModbusTcpServer

            port = self.port if self.port is not None else cfg.tcp["port"]
            servers.append(ModbusTcpServer(slave, port=port, bind=self.bind))
        rtu = cfg.rtu if cfg is not None else None
        device = self.rtu_device or (rtu and rtu["device"])
        if device:
            from modbus_rtu import ModbusRtuServer, PosixSerial

            baud = rtu["baud"] if rtu else 19200
            servers.append(ModbusRtuServer(slave, PosixSerial(device), baud=baud))
        return servers


class VirtualBoard(Board):
    """The virtual board: the firmware deployed into a folder (its flash) and booted by the
    unix port as an ESP32 boots main.py. Its wires are files in that folder: the safety
    outputs (`output-NAME`, written), the reset button (`reset`) and the I/O rig's signals
    (`rig`), read; the watchdog (`wdt`), fed."""

    def __init__(self, reset_pin=None):
        Board.__init__(self, ".", rig="rig")

    def watchdog(self, timeout_ms):
        self.wdt = Watchdog(timeout_ms, self.state_dir + "/wdt")
        return self.wdt

    def connect_wifi(self, ssid, password, timeout_ms=0):
        return True  # the host's own network
