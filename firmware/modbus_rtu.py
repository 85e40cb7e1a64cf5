# Modbus RTU transport: frames on a serial line (RS-485), CRC-16, end of frame by length
# or by 3.5 characters of silence, a direction pin driven around each reply.
import select
import time

from micropython import const

_MAX_ADU = const(256)
_BROADCAST = const(0)

_CRC_TABLE = None


def _crc_table():
    global _CRC_TABLE
    if _CRC_TABLE is None:
        import array

        table = array.array("H", [0] * 256)
        for i in range(256):
            crc = i
            for _ in range(8):
                crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
            table[i] = crc
        _CRC_TABLE = table
    return _CRC_TABLE


def crc16(buf, length):
    table = _crc_table()
    crc = 0xFFFF
    for i in range(length):
        crc = (crc >> 8) ^ table[(crc ^ buf[i]) & 0xFF]
    return crc


def expected_length(buf, fill):
    """Length of a request frame from its header, or 0 when not known yet."""
    if fill < 2:
        return 0
    function = buf[1]
    if function in (3, 4, 6):
        return 8
    if function == 16:
        return 9 + buf[6] if fill >= 7 else 0
    return 0  # unknown function: rely on the silence


class PosixSerial:
    """A serial device or pty in the unix port. MicroPython's file readinto() blocks until
    the buffer is full, so bytes are taken one at a time while poll() says more are ready."""

    def __init__(self, path):
        self.stream = open(path, "r+b")
        self.one = bytearray(1)
        self.ready = select.poll()
        self.ready.register(self.stream, select.POLLIN)

    def readinto(self, view):
        n = 0
        while n < len(view):
            if self.stream.readinto(self.one) != 1:
                break
            view[n] = self.one[0]
            n += 1
            more = False
            for _ in self.ready.ipoll(0):
                more = True
            if not more:
                break
        return n

    def write(self, data):
        self.stream.write(data)

    def flush(self):
        pass


class ModbusRtuServer:
    def __init__(self, slave, port, baud=19200, direction=None):
        self.slave = slave
        self.port = port
        self.direction = direction  # Pin driving the RS-485 transceiver's DE/RE, or None
        # 11 bits per character; the spec fixes the gap at 1.75 ms above 19200 baud.
        self.gap_us = 38500000 // baud if baud <= 19200 else 1750
        self.buf = bytearray(_MAX_ADU)
        self.view = memoryview(self.buf)
        self.out = bytearray(_MAX_ADU)
        self.out_view = memoryview(self.out)
        self.fill = 0
        self.last_rx_us = time.ticks_us()
        self.poller = select.poll()
        self.poller.register(port.stream if hasattr(port, "stream") else port, select.POLLIN)
        self.frames = 0
        if direction is not None:
            direction.value(0)

    def poll(self, timeout_ms):
        if self.fill:
            # A partial frame: wait no longer than the inter-frame gap.
            timeout_ms = min(timeout_ms, self.gap_us // 1000 + 1)
        for _ in self.poller.ipoll(timeout_ms):
            self._read()
            break
        if self.fill:
            need = expected_length(self.buf, self.fill)
            if need and self.fill >= need:
                self._frame(need)
            elif time.ticks_diff(time.ticks_us(), self.last_rx_us) >= self.gap_us:
                self._frame(self.fill)

    def _read(self):
        if self.fill >= _MAX_ADU:
            self.slave.bad_frames += 1  # longer than any Modbus frame: drop it
            self.fill = 0
        n = self.port.readinto(self.view[self.fill :])
        if n:
            self.fill += n
            self.last_rx_us = time.ticks_us()

    def _frame(self, length):
        buf = self.buf
        rest = self.fill - length
        self.frames += 1
        if length < 4 or crc16(buf, length - 2) != (buf[length - 2] | buf[length - 1] << 8):
            self.slave.bad_frames += 1  # spec: a corrupt frame gets no answer
        else:
            unit = buf[0]
            if unit == self.slave.unit or unit == _BROADCAST:
                n = self.slave.handle(buf, 1, length - 3)
                if unit != _BROADCAST:
                    self._reply(unit, n)
        for i in range(rest):
            buf[i] = buf[length + i]
        self.fill = rest

    def _reply(self, unit, n):
        out = self.out
        out[0] = unit
        reply = self.slave.response
        for i in range(n):
            out[1 + i] = reply[i]
        crc = crc16(out, n + 1)
        out[n + 1] = crc & 0xFF
        out[n + 2] = crc >> 8
        if self.direction is not None:
            self.direction.value(1)
        self.port.write(self.out_view[: n + 3])
        self.port.flush()  # the transceiver must not turn around before the last bit
        if self.direction is not None:
            self.direction.value(0)
