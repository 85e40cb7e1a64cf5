# Modbus application layer (PDU) shared by the TCP and RTU transports.
# Function codes 3, 4, 6 and 16 against a RegisterBank; replies are built in one
# preallocated buffer so serving requests does not grow the heap.
from micropython import const

FC_READ_HOLDING = const(3)
FC_READ_INPUT = const(4)
FC_WRITE_SINGLE = const(6)
FC_WRITE_MULTIPLE = const(16)

EX_ILLEGAL_FUNCTION = const(1)
EX_ILLEGAL_ADDRESS = const(2)
EX_ILLEGAL_VALUE = const(3)
EX_DEVICE_FAILURE = const(4)
EX_GATEWAY_NO_RESPONSE = const(0x0B)

_MAX_READ = const(125)
_MAX_WRITE = const(123)


class ModbusSlave:
    """Answers request PDUs. `on_write(address, data, offset, count)` validates and applies
    a holding-register write (all or nothing) and returns 0 or a Modbus exception code;
    `on_read(address, count)` brings input registers up to date before they are read."""

    def __init__(self, bank, unit, on_write=None, on_read=None):
        self.bank = bank
        self.unit = unit
        self.on_write = on_write
        self.on_read = on_read
        self.response = bytearray(256)
        self.requests = 0
        self.exceptions = 0
        self.bad_frames = 0  # counted by the transports: CRC, length, framing

    def exception(self, function, code):
        self.exceptions += 1
        self.response[0] = (function | 0x80) & 0xFF
        self.response[1] = code
        return 2

    def handle(self, pdu, offset, length):
        """Process the PDU in pdu[offset:offset+length]; return the reply length in self.response."""
        self.requests += 1
        if length < 1:
            return self.exception(0, EX_ILLEGAL_VALUE)
        function = pdu[offset]
        if function == FC_READ_HOLDING or function == FC_READ_INPUT:
            if length != 5:
                return self.exception(function, EX_ILLEGAL_VALUE)
            address = _u16(pdu, offset + 1)
            count = _u16(pdu, offset + 3)
            if count < 1 or count > _MAX_READ:
                return self.exception(function, EX_ILLEGAL_VALUE)
            if function == FC_READ_HOLDING:
                source, size = self.bank.holding, self.bank.holding_count
            else:
                source, size = self.bank.inputs, self.bank.input_count
            if address + count > size:
                return self.exception(function, EX_ILLEGAL_ADDRESS)
            if function == FC_READ_INPUT and self.on_read is not None:
                self.on_read(address, count)
            out = self.response
            out[0] = function
            out[1] = 2 * count
            start = 2 * address
            for i in range(2 * count):
                out[2 + i] = source[start + i]
            return 2 + 2 * count
        if function == FC_WRITE_SINGLE:
            if length != 5:
                return self.exception(function, EX_ILLEGAL_VALUE)
            code = self.write(_u16(pdu, offset + 1), pdu, offset + 3, 1)
            if code:
                return self.exception(function, code)
            for i in range(5):
                self.response[i] = pdu[offset + i]
            return 5
        if function == FC_WRITE_MULTIPLE:
            if length < 6:
                return self.exception(function, EX_ILLEGAL_VALUE)
            address = _u16(pdu, offset + 1)
            count = _u16(pdu, offset + 3)
            byte_count = pdu[offset + 5]
            if count < 1 or count > _MAX_WRITE or byte_count != 2 * count or length != 6 + byte_count:
                return self.exception(function, EX_ILLEGAL_VALUE)
            code = self.write(address, pdu, offset + 6, count)
            if code:
                return self.exception(function, code)
            for i in range(5):
                self.response[i] = pdu[offset + i]
            return 5
        return self.exception(function, EX_ILLEGAL_FUNCTION)

    def write(self, address, data, offset, count):
        if address + count > self.bank.holding_count:
            return EX_ILLEGAL_ADDRESS
        if self.on_write is None:
            return EX_ILLEGAL_ADDRESS
        return self.on_write(address, data, offset, count)


def _u16(buf, i):
    # Big-endian register word; struct.unpack_from would allocate a tuple per request.
    return (buf[i] << 8) | buf[i + 1]
