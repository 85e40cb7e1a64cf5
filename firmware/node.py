# The node application: every sample period, read each channel, run its detectors, publish
# the results in the register bank and act on critical detections; in between, serve Modbus.
# The same code runs on the ESP32 (hal_esp32) and in the unix port (hal_unix).
import gc
import struct
import time

import micropython
from micropython import const

import array

import detectors as det
from detectors import FLAG_FAULT, INPUT_OK, SEVERITY_CRITICAL  # used on every sample: one lookup, not two
import regmap
from config_model import ERR_NONE
from modbus_pdu import EX_ILLEGAL_ADDRESS, EX_ILLEGAL_VALUE, ModbusSlave
from regmap import (
    CH_FLAGS,
    CH_VALUE,
    DESC_NAME,
    DESC_NAME_REGS,
    DESC_UNIT,
    DESC_UNIT_REGS,
    HR_HIGH,
    HR_LOW,
    HR_RATE_LIMIT,
    HR_RESERVED,
    HR_RESET,
    HR_Z_THRESHOLD,
    IDENTITY_REGISTERS,
    IR_BAD_FRAMES,
    IR_CHANNEL_BASE,
    IR_CHANNEL_COUNT,
    IR_CHANNEL_STRIDE,
    IR_CONFIG_ERROR,
    IR_DETECTIONS,
    IR_FW_VERSION,
    IR_MAGIC,
    IR_MAP_VERSION,
    IR_NODE_ID,
    IR_NODE_STATUS,
    IR_OUTPUT_COUNT,
    IR_OUTPUTS_ENERGISED,
    IR_OVERRUNS,
    IR_RESET_REJECTS,
    IR_SAMPLE_COUNT,
    IR_SAMPLE_PERIOD_MS,
    IR_TRIP_CAUSE,
    IR_TRIP_LATCHED,
    IR_TRIPS,
    IR_UPTIME_S,
    STATUS_CONFIG_ERROR,
    STATUS_NOT_READY,
    STATUS_RUNNING,
    STATUS_SAFE_STATE,
    STATUS_TRIP_LATCHED,
    STATUS_WATCHDOG,
)
from safety import SafetyLatch

_SLICE_MS = 5  # longest wait on one transport while another may have a request
# The counters the cycle updates wrap here, as their registers do: past it they would be
# heap objects on the ESP32 (2**30 samples is 3.4 years at 10 Hz).
_COUNTER_MAX = const(0x3FFFFFFF)
_LIMITS = const(5)  # entries per channel in Node.limits


def publish_identity(bank, node_id, period_ms, channel_count=0, output_count=0, config_error=ERR_NONE):
    bank.set_u16(IR_MAGIC, regmap.MAGIC)
    bank.set_u16(IR_MAP_VERSION, regmap.MAP_VERSION)
    bank.set_u16(IR_FW_VERSION, regmap.FW_VERSION)
    bank.set_u16(IR_NODE_ID, node_id)
    bank.set_u16(IR_CHANNEL_COUNT, channel_count)
    bank.set_u16(IR_SAMPLE_PERIOD_MS, period_ms)
    bank.set_u16(IR_OUTPUT_COUNT, output_count)
    bank.set_u16(IR_CONFIG_ERROR, config_error)


def unlock_heap():
    """Leave the heap unlocked, whether the lock was taken (depth 1) or not (0). An interrupt
    can land between a lock or an unlock and the `try` that pairs it (the unix port raises
    Ctrl-C from its signal handler, anywhere); unlocking an unlocked heap takes its depth
    below 0, which locks it, and the REPL or a deploy would then fail on every allocation."""
    if micropython.heap_unlock():  # not 0: the depth went below 0, so it was not locked
        micropython.heap_lock()  # back to 0


def build_steps(cfg, board, bank=None):
    """Node(cfg, board, bank) a step at a time, for a caller that collects garbage between
    steps itself: yields the node after its shared parts and after each channel, the last
    time complete."""
    node = object.__new__(Node)
    for _ in node._build(cfg, board, bank):
        yield node


class Node:
    def __init__(self, cfg, board, bank=None):
        # Garbage collected after each channel: what one channel's set-up leaves behind is
        # then never in the heap with the next one's, and start-up needs little more heap than
        # the node keeps.
        for _ in self._build(cfg, board, bank):
            gc.collect()

    def _build(self, cfg, board, bank):
        # The node takes the channel configurations over: it keeps what it needs of each in
        # arrays, its detector and the sampler, then sets the entry in cfg.channels to None.
        # Start-up is the heap's peak, and this way the configuration objects and the node
        # are not in it together. Everything that does not depend on a channel comes first,
        # while the heap is least fragmented; the outputs are safe from here on.
        channels = cfg.channels
        n = len(channels)
        self.board = board
        self.bank = bank or regmap.RegisterBank()
        self.reset_code = cfg.reset_code
        self.period_ms = cfg.sample_period_ms
        self.outputs = board.outputs(cfg.outputs)
        self.latch = SafetyLatch(self.outputs, board.flash)
        self.wdt = None  # started last: once running, it cannot wait for the channels' set-up
        self.slave = ModbusSlave(self.bank, cfg.node_id, on_write=self.on_write, on_read=self.on_read)
        self.samples = 0
        self.detections = 0
        self.overruns = 0
        self.reset_rejects = 0
        self.started_ms = time.ticks_ms()
        self.next_due_ms = self.started_ms
        self.last_sample_ms = self.started_ms
        self.healthy = False
        self.trip_mask = 0  # set by every cycle's detection: outputs to trip, and why
        self.trip_cause = 0xFFFF
        self.sampler = board.sampler(channels, cfg.sample_period_ms)
        self.detectors = []
        self.ks = bytearray(n)
        self.dividers = array.array("H", bytes(2 * n))
        self.trip_masks = array.array("H", bytes(2 * n))
        # The configured limits that remote tuning stays within, per channel: bounds and rate
        # limit in counts, Z range in 1/16 units.
        self.limits = array.array("i", bytes(4 * _LIMITS * n))
        self.previous = array.array("H", bytes(2 * n))
        self.values = array.array("i", bytes(4 * n))  # last good counts per channel
        yield
        for i in range(n):
            ch = channels[i]
            d = ch.detector()
            self.detectors.append(d)
            self.ks[i] = ch.k
            self.dividers[i] = ch.divider
            self.trip_masks[i] = ch.trips
            j = i * _LIMITS
            self.limits[j] = d.low
            self.limits[j + 1] = d.high
            self.limits[j + 2] = d.rate_limit
            self.limits[j + 3] = int(ch.z_tunable[0] * det.Z_ONE + 0.5)
            self.limits[j + 4] = int(ch.z_tunable[1] * det.Z_ONE + 0.5)
            self.bank.set_text(regmap.descriptor_address(i, DESC_NAME), ch.name, DESC_NAME_REGS)
            self.bank.set_text(regmap.descriptor_address(i, DESC_UNIT), ch.unit, DESC_UNIT_REGS)
            channels[i] = None
            yield
        publish_identity(self.bank, cfg.node_id, self.period_ms, n, len(self.outputs))
        for i in range(n):
            self._publish_tunables(i)
        if cfg.watchdog_ms:
            self.wdt = board.watchdog(cfg.watchdog_ms)
        self._publish_status()
        yield

    # -- sample cycle -------------------------------------------------------------------

    def sample(self, now_ms):
        """One cycle: read, detect, act, publish. The detection runs with the heap locked: it
        allocates nothing, and MicroPython then keeps every frame on the stack (one whose
        locals and stack pass 11 words it otherwise allocates on the heap and frees, on every
        call), and an allocation in it fails at once rather than start a collection in the
        loop. What may allocate runs unlocked: the sampler (a driver's I/O), a trip's write
        to flash, a reset."""
        self.sampler.update()
        try:
            micropython.heap_lock()
            healthy = self._detect()
        finally:
            unlock_heap()
        if self.trip_mask:
            self.latch.trip(self.trip_mask, self.trip_cause)  # outputs go safe in this same cycle
        if self.board.reset_input.pressed():
            self.reset()
        # Outputs come on only once every channel has a full, fault-free window.
        self.latch.permit(healthy)
        self.samples = self.samples + 1 if self.samples < _COUNTER_MAX else 0
        self.healthy = healthy
        self.last_sample_ms = now_ms
        return healthy

    def _detect(self):
        """Every channel due this cycle through its detector, with the heap locked (see
        sample); the outputs to trip and the first cause in trip_mask and trip_cause."""
        sampler = self.sampler
        inputs = self.bank.inputs
        status = sampler.status
        detectors = self.detectors
        dividers = self.dividers
        previous = self.previous
        trip_masks = self.trip_masks
        values = self.values
        latched = self.latch.latched
        trip = 0
        cause = 0xFFFF
        healthy = True
        cycle = self.samples
        heap_lock = micropython.heap_lock
        heap_unlock = micropython.heap_unlock
        for i in range(len(detectors)):
            d = detectors[i]
            if dividers[i] != 1 and cycle % dividers[i]:
                # not this channel's turn: it keeps its last state, and still counts for health
                if d.active & FLAG_FAULT or d.filled < d.window:
                    healthy = False
                continue
            heap_unlock()  # a driver may allocate
            try:
                q = sampler.read(i)
            finally:
                heap_lock()
            flags = d.update(q, status[i])
            if flags & ~previous[i]:
                self.detections = self.detections + 1 if self.detections < _COUNTER_MAX else 0
            previous[i] = flags
            if d.level == SEVERITY_CRITICAL and trip_masks[i] & ~latched:
                trip |= trip_masks[i]
                if cause == 0xFFFF:
                    cause = (i << 8) | _first_critical(d)
            if flags & FLAG_FAULT or d.filled < d.window:
                healthy = False  # a faulty or warming-up sensor cannot vouch for the plant
            if status[i] == INPUT_OK:
                values[i] = q  # the value register keeps the last good sample while the input is missing
            # flags, severity and raw flags (all below 256): the low bytes of three registers,
            # whose high bytes stay zero; the value, Z and mean floats are packed when a master
            # reads them (on_read)
            j = (IR_CHANNEL_BASE + i * IR_CHANNEL_STRIDE + CH_FLAGS) << 1
            inputs[j + 1] = flags
            inputs[j + 3] = d.level
            inputs[j + 5] = d.raw
        self.trip_mask = trip
        self.trip_cause = cause
        return healthy

    def _publish_status(self):
        # Status and counters as of the last sample; done when a master reads them (on_read).
        bank = self.bank
        latch = self.latch
        status = STATUS_RUNNING
        if latch.energised == 0:
            status |= STATUS_SAFE_STATE
        if latch.latched:
            status |= STATUS_TRIP_LATCHED
        if not self.healthy:
            status |= STATUS_NOT_READY
        if self.wdt is not None:
            status |= STATUS_WATCHDOG
        bank.set_u16(IR_NODE_STATUS, status)
        bank.set_u16(IR_TRIP_LATCHED, latch.latched)
        bank.set_u16(IR_TRIP_CAUSE, latch.cause)
        bank.set_u16(IR_OUTPUTS_ENERGISED, latch.energised)
        bank.set_u32(IR_SAMPLE_COUNT, self.samples)
        bank.set_u32(IR_DETECTIONS, self.detections)
        bank.set_u32(IR_TRIPS, latch.trips)
        bank.set_u32(IR_BAD_FRAMES, self.slave.exceptions + self.slave.bad_frames)
        bank.set_u16(IR_RESET_REJECTS, self.reset_rejects)
        bank.set_u16(IR_OVERRUNS, self.overruns)
        bank.set_u32(IR_UPTIME_S, time.ticks_diff(self.last_sample_ms, self.started_ms) // 1000)

    def reset(self):
        """The reset path: clears the latch; outputs return only once healthy again."""
        self.latch.reset()

    # -- scheduling ---------------------------------------------------------------------

    def due_in_ms(self, now_ms):
        return time.ticks_diff(self.next_due_ms, now_ms)

    def step(self, now_ms):
        """Sample if the period has elapsed; feed the watchdog only after a healthy, timely
        cycle. A late cycle is counted and the schedule restarts from now."""
        if self.due_in_ms(now_ms) > 0:
            return False
        late = -self.due_in_ms(now_ms)
        self.sample(now_ms)
        self.next_due_ms = time.ticks_add(self.next_due_ms, self.period_ms)
        if time.ticks_diff(self.next_due_ms, now_ms) <= 0:
            self.overruns += 1
            self.next_due_ms = time.ticks_add(now_ms, self.period_ms)
        if self.wdt is not None and late < self.period_ms:
            self.wdt.feed()
        return True

    def run(self, servers, should_stop=None):
        # A transport's poll() waits on its own line only: with several, the wait for the
        # next sample is cut into slices, so that no request waits a period for another's.
        slice_ms = _SLICE_MS if len(servers) > 1 else 0x3FFFFFFF
        while should_stop is None or not should_stop():
            self.step(time.ticks_ms())
            for server in servers:
                wait = self.due_in_ms(time.ticks_ms())
                server.poll(min(wait, slice_ms) if wait > 0 and server is servers[-1] else 0)

    # -- Modbus reads and writes ---------------------------------------------------------

    def on_read(self, address, count):
        """Bring the registers a read covers up to the last sample: node status and counters,
        and each channel's value, Z-score and mean as float32. Done per request rather than per
        sample: packing is most of a cycle's cost, and a gateway polls less often than the node
        samples."""
        if address < IDENTITY_REGISTERS:
            self._publish_status()
        first = (address - IR_CHANNEL_BASE) // IR_CHANNEL_STRIDE
        last = (address + count - 1 - IR_CHANNEL_BASE) // IR_CHANNEL_STRIDE
        if first < 0:
            first = 0
        if last >= len(self.detectors):
            last = len(self.detectors) - 1
        bank = self.bank
        for i in range(first, last + 1):
            d = self.detectors[i]
            base = IR_CHANNEL_BASE + i * IR_CHANNEL_STRIDE + CH_VALUE
            bank.set_measurement(base, self.values[i], self.ks[i], d.z16, d.mean16)

    def on_write(self, address, data, offset, count):
        end = address + count
        if address <= HR_RESET < end:
            if count != 1:
                return EX_ILLEGAL_VALUE
            code = struct.unpack_from(">H", data, offset)[0]
            if code != self.reset_code:
                self.reset_rejects += 1
                return EX_ILLEGAL_VALUE
            self.reset()
            return 0
        first = regmap.HR_CHANNEL_BASE
        if address < first:
            return EX_ILLEGAL_ADDRESS
        channel = (address - first) // regmap.HR_CHANNEL_STRIDE
        if channel >= len(self.detectors) or (end - 1 - first) // regmap.HR_CHANNEL_STRIDE != channel:
            return EX_ILLEGAL_ADDRESS
        field = (address - first) % regmap.HR_CHANNEL_STRIDE
        fields = ((HR_LOW, 2), (HR_HIGH, 2), (HR_RATE_LIMIT, 2), (HR_Z_THRESHOLD, 1), (HR_RESERVED, 1))
        # Writes must cover whole fields: half a float32 (either half) is not a value.
        pos = field
        while pos < field + count:
            for start, size in fields:
                if start == pos:
                    pos += size
                    break
            else:
                return EX_ILLEGAL_VALUE
        if pos != field + count:
            return EX_ILLEGAL_VALUE
        pos = field
        cursor = offset
        while pos < field + count:
            if pos == HR_RESERVED:  # ignored: the block's last register, written back with it
                pos += 1
                cursor += 2
            elif pos == HR_Z_THRESHOLD:
                raw = struct.unpack_from(">H", data, cursor)[0]
                self._tune(channel, pos, raw / 100)
                pos += 1
                cursor += 2
            else:
                value = struct.unpack_from(">f", data, cursor)[0]
                if value != value:  # NaN
                    return EX_ILLEGAL_VALUE
                self._tune(channel, pos, value)
                pos += 2
                cursor += 4
        self._publish_tunables(channel)
        return 0

    def _tune(self, i, field, value):
        """Apply a remote threshold, clamped to the node's own configuration: bounds and the
        rate limit can only be tightened, the Z threshold moves within its tunable range."""
        d = self.detectors[i]
        limits = self.limits
        j = i * _LIMITS
        k = self.ks[i]
        if field == HR_LOW:
            d.low = min(_clamped_counts(value, k, limits[j], limits[j + 1]), d.high)
        elif field == HR_HIGH:
            d.high = max(_clamped_counts(value, k, limits[j], limits[j + 1]), d.low)
        elif field == HR_RATE_LIMIT:
            if d.rate_horizon:
                d.rate_limit = _clamped_counts(value, k, 0, limits[j + 2])
        elif field == HR_Z_THRESHOLD:
            d.z_limit = _clamped_counts(value * det.Z_ONE, 0, limits[j + 3], limits[j + 4])

    def _publish_tunables(self, i):
        d = self.detectors[i]
        k = self.ks[i]
        bank = self.bank
        bank.set_scaled(regmap.holding_address(i, HR_LOW), d.low, k, bank.holding)
        bank.set_scaled(regmap.holding_address(i, HR_HIGH), d.high, k, bank.holding)
        bank.set_scaled(regmap.holding_address(i, HR_RATE_LIMIT), d.rate_limit, k, bank.holding)
        bank.set_holding_u16(regmap.holding_address(i, HR_Z_THRESHOLD), (d.z_limit * 100 + 8) // det.Z_ONE)


def _clamped_counts(value, k, low, high):
    """value * 2**k rounded to counts (half away from zero, as the configuration does),
    held within low..high counts; infinities land on the limits."""
    x = value * (1 << k)
    if x <= low:
        return low
    if x >= high:
        return high
    return int(x + 0.5) if x >= 0 else int(x - 0.5)


def _first_critical(d):
    for check in range(det.CHECKS):
        if d.active & (1 << check) and d.severity[check] == det.SEVERITY_CRITICAL:
            return check
    return 0xFF


def config_error_node(bank, node_id, period_ms, code):
    """Registers of a node that could not load its configuration: identity and the error."""
    publish_identity(bank, node_id, period_ms, config_error=code)
    bank.set_u16(IR_NODE_STATUS, STATUS_RUNNING | STATUS_CONFIG_ERROR | STATUS_SAFE_STATE | STATUS_NOT_READY)
