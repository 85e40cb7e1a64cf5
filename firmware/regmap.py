# Node register map, version 1. The contract is firmware/REGISTERS.md;
# gatewayd/acquisition/profiles/edge_node.py mirrors these numbers and a test checks both agree.
import struct

from micropython import const

MAGIC = const(0x4544)  # "ED"
MAP_VERSION = const(1)
FW_VERSION = const(0x0001)  # major << 8 | minor

# Input registers (function code 4): identity and status.
IR_MAGIC = const(0)
IR_MAP_VERSION = const(1)
IR_FW_VERSION = const(2)
IR_NODE_ID = const(3)
IR_CHANNEL_COUNT = const(4)
IR_NODE_STATUS = const(5)
IR_UPTIME_S = const(6)  # uint32, high word first
IR_SAMPLE_COUNT = const(8)  # uint32, high word first
IR_SAMPLE_PERIOD_MS = const(10)
IR_OVERRUNS = const(11)
IR_TRIP_LATCHED = const(12)  # bit per output
IR_TRIP_CAUSE = const(13)  # channel << 8 | check, 0xFFFF for none
IR_DETECTIONS = const(14)  # uint32
IR_TRIPS = const(16)  # uint32
IR_BAD_FRAMES = const(18)  # uint32
IR_CONFIG_ERROR = const(20)
IR_OUTPUTS_ENERGISED = const(21)  # bit per output
IR_OUTPUT_COUNT = const(22)
IR_RESET_REJECTS = const(23)
IDENTITY_REGISTERS = const(24)

# Input registers: one block per channel.
IR_CHANNEL_BASE = const(100)
IR_CHANNEL_STRIDE = const(10)
CH_VALUE = const(0)  # float32, high word first
CH_ZSCORE = const(2)  # float32
CH_MEAN = const(4)  # float32, mean of the detector window
CH_FLAGS = const(6)  # checks active after hysteresis (detectors.FLAG_*)
CH_SEVERITY = const(7)  # 0 normal, 1 warning, 2 critical
CH_RAW_FLAGS = const(8)  # checks that fired on the last sample

# Input registers: channel descriptors, ASCII, NUL padded, two characters per register.
IR_DESCRIPTOR_BASE = const(300)
IR_DESCRIPTOR_STRIDE = const(8)
DESC_NAME = const(0)
DESC_NAME_REGS = const(6)
DESC_UNIT = const(6)
DESC_UNIT_REGS = const(2)

MAX_CHANNELS = const(16)
INPUT_REGISTER_COUNT = const(IR_DESCRIPTOR_BASE + MAX_CHANNELS * IR_DESCRIPTOR_STRIDE)
# Holding registers (function codes 3, 6, 16): reset command and tunable thresholds.
HR_RESET = const(0)  # write the node's reset code to clear a latched trip
HR_CHANNEL_BASE = const(16)
HR_CHANNEL_STRIDE = const(8)
HR_LOW = const(0)  # float32, engineering units
HR_HIGH = const(2)  # float32
HR_RATE_LIMIT = const(4)  # float32, per rate horizon
HR_Z_THRESHOLD = const(6)  # uint16, threshold * 100
HR_RESERVED = const(7)  # reads 0; a write to it is accepted and ignored (a block written back whole)
HOLDING_REGISTER_COUNT = const(HR_CHANNEL_BASE + MAX_CHANNELS * HR_CHANNEL_STRIDE)

# Node status bits (IR_NODE_STATUS).
STATUS_RUNNING = const(0x0001)
STATUS_CONFIG_ERROR = const(0x0002)
STATUS_SAFE_STATE = const(0x0004)
STATUS_TRIP_LATCHED = const(0x0008)
STATUS_NOT_READY = const(0x0010)
STATUS_WATCHDOG = const(0x0020)


class RegisterBank:
    """Input and holding registers as preallocated big-endian byte arrays."""

    def __init__(self, input_count=INPUT_REGISTER_COUNT, holding_count=HOLDING_REGISTER_COUNT):
        self.input_count = input_count
        self.holding_count = holding_count
        self.inputs = bytearray(2 * input_count)
        self.holding = bytearray(2 * holding_count)

    def set_u16(self, address, value):
        i = address << 1
        self.inputs[i] = (value >> 8) & 0xFF
        self.inputs[i + 1] = value & 0xFF

    def set_u32(self, address, value):
        # Counters wrap at 2**30: a wider mask is a big int on the ESP32 and would allocate.
        struct.pack_into(">I", self.inputs, 2 * address, value & 0x3FFFFFFF)

    def set_f32(self, address, value):
        struct.pack_into(">f", self.inputs, 2 * address, value)

    def set_scaled(self, address, counts, k, target=None):
        """Store counts * 2**-k as a big-endian float32 without allocating: struct converts
        the integer in C (no float object), then k comes off the exponent in place."""
        buf = self.inputs if target is None else target
        i = address << 1
        struct.pack_into(">f", buf, i, counts)
        _rescale(buf, i, k)

    def set_measurement(self, address, value, k, z16, mean16):
        """A channel's value (counts), Z-score and mean (both 1/16 counts): three float32
        from +0 in one pack."""
        buf = self.inputs
        i = address << 1
        struct.pack_into(">fff", buf, i, value, z16, mean16)
        _rescale(buf, i, k)
        _rescale(buf, i + 4, 4)
        _rescale(buf, i + 8, k + 4)

    def set_text(self, address, text, registers):
        # Called at setup only; pads with NUL and truncates to the field.
        base = 2 * address
        raw = text.encode()
        for i in range(2 * registers):
            self.inputs[base + i] = raw[i] if i < len(raw) else 0

    def get_u16(self, address):
        return struct.unpack_from(">H", self.inputs, 2 * address)[0]

    def get_f32(self, address):
        return struct.unpack_from(">f", self.inputs, 2 * address)[0]

    def holding_u16(self, address):
        return struct.unpack_from(">H", self.holding, 2 * address)[0]

    def set_holding_u16(self, address, value):
        struct.pack_into(">H", self.holding, 2 * address, value & 0xFFFF)

    def holding_f32(self, address):
        return struct.unpack_from(">f", self.holding, 2 * address)[0]

    def set_holding_f32(self, address, value):
        struct.pack_into(">f", self.holding, 2 * address, value)


def channel_address(index, field):
    return IR_CHANNEL_BASE + index * IR_CHANNEL_STRIDE + field


def _rescale(buf, i, k):
    """Divide the big-endian float32 at buf[i] by 2**k by lowering its exponent."""
    b0 = buf[i]
    b1 = buf[i + 1]
    exponent = ((b0 & 0x7F) << 1) | (b1 >> 7)
    if exponent > k:
        exponent -= k
        buf[i] = (b0 & 0x80) | (exponent >> 1)
        buf[i + 1] = (b1 & 0x7F) | ((exponent & 1) << 7)
    elif exponent:  # below float32's normal range: flush to (signed) zero
        buf[i] = b0 & 0x80
        buf[i + 1] = 0
        buf[i + 2] = 0
        buf[i + 3] = 0


def holding_address(index, field):
    return HR_CHANNEL_BASE + index * HR_CHANNEL_STRIDE + field


def descriptor_address(index, field):
    return IR_DESCRIPTOR_BASE + index * IR_DESCRIPTOR_STRIDE + field
