# Node register map, version 1. The contract is firmware/REGISTERS.md;
# gatewayd/profiles/edge_node.py mirrors these numbers and a test checks both agree.
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

# Input registers: one block per channel.
IR_CHANNEL_BASE = const(100)
IR_CHANNEL_STRIDE = const(10)
CH_VALUE = const(0)  # float32, high word first
CH_ZSCORE = const(2)  # float32
CH_MEAN = const(4)  # float32, mean of the detector window
CH_FLAGS = const(6)
CH_SEVERITY = const(7)

# Input registers: channel descriptors, ASCII, NUL padded, two characters per register.
IR_DESCRIPTOR_BASE = const(300)
IR_DESCRIPTOR_STRIDE = const(8)
DESC_NAME = const(0)
DESC_NAME_REGS = const(6)
DESC_UNIT = const(6)
DESC_UNIT_REGS = const(2)

MAX_CHANNELS = const(16)
INPUT_REGISTER_COUNT = const(IR_DESCRIPTOR_BASE + MAX_CHANNELS * IR_DESCRIPTOR_STRIDE)
HOLDING_REGISTER_COUNT = const(64)

# Node status bits (IR_NODE_STATUS).
STATUS_RUNNING = const(0x0001)
STATUS_CONFIG_ERROR = const(0x0002)
STATUS_SAFE_STATE = const(0x0004)

# Channel flag bits (CH_FLAGS).
FLAG_FAULT = const(0x0001)


class RegisterBank:
    """Input and holding registers as preallocated big-endian byte arrays."""

    def __init__(self, input_count=INPUT_REGISTER_COUNT, holding_count=HOLDING_REGISTER_COUNT):
        self.input_count = input_count
        self.holding_count = holding_count
        self.inputs = bytearray(2 * input_count)
        self.holding = bytearray(2 * holding_count)

    def set_u16(self, address, value):
        struct.pack_into(">H", self.inputs, 2 * address, value & 0xFFFF)

    def set_u32(self, address, value):
        struct.pack_into(">I", self.inputs, 2 * address, value & 0xFFFFFFFF)

    def set_f32(self, address, value):
        struct.pack_into(">f", self.inputs, 2 * address, value)

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


def channel_address(index, field):
    return IR_CHANNEL_BASE + index * IR_CHANNEL_STRIDE + field


def descriptor_address(index, field):
    return IR_DESCRIPTOR_BASE + index * IR_DESCRIPTOR_STRIDE + field
