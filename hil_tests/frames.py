"""Malformed Modbus frames, each with the answer the register map (firmware/REGISTERS.md)
and the Modbus spec prescribe for it, and senders that check every answer.

Nothing generated here is a valid request that would change the node: no write that could
tune a threshold, never the reset code. Over TCP a broken MBAP header makes the node drop
the connection (documented: resynchronising a stream is guesswork), so those go alone and
the sender reconnects; over RTU a bad CRC, a truncated frame or another unit's traffic gets
no answer at all.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import serial

from gatewayd.acquisition.profiles import edge_node as reg

INPUT_END = reg.IR_DESCRIPTOR_BASE + reg.MAX_CHANNELS * reg.IR_DESCRIPTOR_STRIDE  # 428
HOLDING_END = reg.HR_CHANNEL_BASE + reg.MAX_CHANNELS * reg.HR_CHANNEL_STRIDE  # 144
EX_FUNCTION, EX_ADDRESS, EX_VALUE, EX_NO_TARGET = 1, 2, 3, 0x0B
DROP = -1  # TCP: the node closes the connection
SILENT = -2  # RTU: no answer


@dataclass(frozen=True)
class Frame:
    kind: str
    pdu: bytes
    unit: int
    answer: int  # the exception code expected, DROP or SILENT
    header: bytes = b""  # TCP: a broken MBAP header replacing the real one
    cut: int = 0  # RTU: bytes left off the end (truncated frame)
    bad_crc: bool = False


class FrameMaker:
    """Seeded, so a failure names a frame that the same seed makes again."""

    def __init__(self, unit: int, channels: int, reset_code: int, seed: int = 8):
        self.unit = unit
        self.channels = channels
        self.reset_code = reset_code
        self.rng = random.Random(seed)

    def _not(self, exclude: set[int], low: int = 0, high: int = 0xFFFF) -> int:
        while True:
            v = self.rng.randint(low, high)
            if v not in exclude:
                return v

    def pdu_frame(self) -> Frame:
        """A request that reaches the application layer and must get exactly one exception."""
        r, u = self.rng, self.unit
        kind = r.choice(
            (
                "function",
                "read-length",
                "read-count",
                "read-range",
                "write-length",
                "write-reserved",
                "write-channel",
                "reset-code",
                "multi-count",
                "half-float",
                "nan",
            )
        )
        if kind == "function":
            fc = self._not({3, 4, 6, 16}, 0, 255)
            return Frame(kind, bytes([fc]) + r.randbytes(r.randint(0, 8)), u, EX_FUNCTION)
        if kind == "read-length":
            body = r.randbytes(r.choice((0, 1, 2, 3, 5, 6, 9)))
            return Frame(kind, bytes([r.choice((3, 4))]) + body, u, EX_VALUE)
        if kind == "read-count":
            count = r.choice((0, self._not(set(range(126)), 126, 0xFFFF)))
            return Frame(kind, struct.pack(">BHH", r.choice((3, 4)), r.randint(0, 50), count), u, EX_VALUE)
        if kind == "read-range":
            fc = r.choice((3, 4))
            end = HOLDING_END if fc == 3 else INPUT_END
            count = r.randint(1, 125)
            address = r.randint(max(0, end - count + 1), 0xFFFF)
            return Frame(kind, struct.pack(">BHH", fc, address, count), u, EX_ADDRESS)
        if kind == "write-length":
            return Frame(kind, bytes([6]) + r.randbytes(r.choice((0, 1, 3, 5, 8))), u, EX_VALUE)
        if kind == "write-reserved":
            return Frame(
                kind, struct.pack(">BHH", 6, r.randint(1, reg.HR_CHANNEL_BASE - 1), r.randint(0, 0xFFFF)), u, EX_ADDRESS
            )
        if kind == "write-channel":  # a channel this node does not have, or past the bank
            first = reg.HR_CHANNEL_BASE + self.channels * reg.HR_CHANNEL_STRIDE
            return Frame(kind, struct.pack(">BHH", 6, r.randint(first, 0xFFFF), r.randint(0, 0xFFFF)), u, EX_ADDRESS)
        if kind == "reset-code":
            return Frame(kind, struct.pack(">BHH", 6, reg.HR_RESET, self._not({self.reset_code})), u, EX_VALUE)
        if kind == "multi-count":  # byte count disagrees with the register count
            count = r.randint(1, 10)
            words = r.randbytes(2 * count)
            return Frame(kind, struct.pack(">BHHB", 16, reg.HR_CHANNEL_BASE, count, 2 * count + 1) + words, u, EX_VALUE)
        if kind == "half-float":  # one register of a float32 threshold, the high word or the low one
            address = reg.HR_CHANNEL_BASE + r.randrange(self.channels) * reg.HR_CHANNEL_STRIDE + r.randrange(6)
            return Frame(kind, struct.pack(">BHHBH", 16, address, 1, 2, r.randint(0, 0xFFFF)), u, EX_VALUE)
        address = reg.HR_CHANNEL_BASE + r.randrange(self.channels) * reg.HR_CHANNEL_STRIDE + r.choice((0, 2, 4))
        return Frame(kind, struct.pack(">BHHB", 16, address, 2, 4) + struct.pack(">f", float("nan")), u, EX_VALUE)

    def tcp_frame(self) -> Frame:
        r = self.rng
        roll = r.random()
        if roll < 0.04:  # not Modbus TCP at all: protocol id, or a length no frame can have
            broken = struct.pack(">HHH", r.randint(0, 0xFFFF), self._not({0}), r.randint(0, 0xFFFF))
            if r.random() < 0.5:
                broken = struct.pack(">HHH", r.randint(0, 0xFFFF), 0, r.choice((0, 1, self._not(set(range(255)), 255))))
            return Frame("mbap", b"", self.unit, DROP, header=broken)
        if roll < 0.10:  # another unit behind this address: the node is no gateway
            frame = self.pdu_frame()
            return Frame("unit", frame.pdu, self._not({self.unit, 0, 255}, 1, 254), EX_NO_TARGET)
        return self.pdu_frame()

    def rtu_frame(self) -> Frame:
        r = self.rng
        roll = r.random()
        good = struct.pack(">BHH", 4, 0, r.randint(1, 24))
        if roll < 0.15:
            return Frame("crc", good, self.unit, SILENT, bad_crc=True)
        if roll < 0.25:
            return Frame("truncated", good, self.unit, SILENT, cut=r.randint(1, 6))
        if roll < 0.35:  # someone else's traffic (or line noise) on a shared bus
            return Frame("other-unit", r.randbytes(r.randint(1, 12)), self._not({self.unit, 0}, 1, 255), SILENT)
        frame = self.pdu_frame()
        if frame.pdu[0] in (3, 4, 6) and len(frame.pdu) > 5:
            # RTU knows these requests' length: the node ends the frame there and its CRC fails
            return replace(frame, answer=SILENT)
        return frame


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu_bytes(frame: Frame) -> bytes:
    body = bytes([frame.unit]) + frame.pdu
    crc = crc16(body) ^ (0x5A5A if frame.bad_crc else 0)
    data = body + struct.pack("<H", crc)
    return data[: len(data) - frame.cut] if frame.cut else data


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0  # exception replies, each checked
    dropped: int = 0  # TCP connections the node closed, as it must
    silent: int = 0  # RTU frames that got no answer, as they must
    retried: int = 0  # RTU frames sent twice, as a master does after a response timeout
    kinds: Counter[str] = field(default_factory=Counter)


def _check(frame: Frame, reply_pdu: bytes) -> None:
    fc = frame.pdu[0] if frame.pdu else 0
    expected = bytes([(fc | 0x80) & 0xFF, frame.answer])
    assert reply_pdu == expected, (
        f"{frame.kind} frame {frame.pdu.hex()}: answered {reply_pdu.hex()}, expected {expected.hex()}"
    )


def send_tcp(make_socket, maker: FrameMaker, count: int, batch: int = 32) -> Tally:
    """Frames over Modbus TCP: answered ones pipelined `batch` at a time (replies matched by
    transaction id); a connection-breaking one alone, after the replies before it, then a
    new connection."""
    tally = Tally()
    sock = make_socket()
    pending: dict[int, Frame] = {}
    out = bytearray()
    tid = 0

    def collect() -> None:
        sock.sendall(out)
        out.clear()
        while pending:
            header = _recv_exact(sock, 7)
            got_tid, proto, length, unit = struct.unpack(">HHHB", header)
            frame = pending.pop(got_tid)
            assert proto == 0 and unit == frame.unit, f"bad reply header {header.hex()} to a {frame.kind} frame"
            _check(frame, _recv_exact(sock, length - 1))
            tally.answered += 1

    try:
        for _ in range(count):
            frame = maker.tcp_frame()
            tally.sent += 1
            tally.kinds[frame.kind] += 1
            if frame.answer == DROP:
                collect()
                _send_breaking(sock, frame)
                tally.dropped += 1
                sock.close()
                sock = make_socket()
                continue
            tid = (tid + 1) & 0xFFFF
            pending[tid] = frame
            out += struct.pack(">HHHB", tid, 0, len(frame.pdu) + 1, frame.unit) + frame.pdu
            if len(pending) >= batch:
                collect()
        collect()
    finally:
        sock.close()
    return tally


def _send_breaking(sock: socket.socket, frame: Frame) -> None:
    sock.sendall(frame.header + bytes([frame.unit]) + b"\x04\x00\x00\x00\x01")
    sock.settimeout(2.0)
    try:
        while sock.recv(256):
            pass  # anything before the close would be a reply to a frame that deserves none
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(
            f"the node kept a connection open after a broken MBAP header {frame.header.hex()}"
        ) from None


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        # The node writes one segment per reply without TCP_NODELAY: acknowledge at once, or
        # Nagle there and delayed ACKs here hold every pipelined batch for ~40 ms.
        if hasattr(socket, "TCP_QUICKACK"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection closed with {len(data)} of {n} bytes of a reply")
        data += chunk
    return data


def send_rtu(line: serial.Serial, maker: FrameMaker, count: int, *, gap_s: float = 0.02) -> Tally:
    """Frames over RTU one at a time, as a master sends them: after a frame that deserves no
    answer, a pause (so the node ends that frame); after a response timeout, one retry. A
    node that misses a frame's end (a frame held in its UART while it was busy for the whole
    pause) merges two frames and answers neither: the retry tells that from a wrong answer."""
    tally = Tally()
    for _ in range(count):
        frame = maker.rtu_frame()
        tally.sent += 1
        tally.kinds[frame.kind] += 1
        if frame.answer == SILENT:
            _write(line, frame)
            time.sleep(gap_s)
            stray = line.read(line.in_waiting) if line.in_waiting else b""
            assert not stray, f"{frame.kind} frame {rtu_bytes(frame).hex()} was answered: {stray.hex()}"
            tally.silent += 1
            continue
        for attempt in range(2):
            _write(line, frame)
            reply = line.read(5)  # unit, fc | 0x80, code, crc
            if reply or attempt:
                break
            tally.retried += 1
        assert len(reply) == 5, f"{frame.kind} frame {rtu_bytes(frame).hex()}: no answer, twice ({reply.hex()})"
        assert reply[0] == frame.unit and crc16(reply[:3]) == int.from_bytes(reply[3:], "little"), reply.hex()
        _check(frame, reply[1:3])
        tally.answered += 1
        time.sleep(0.002)  # the node keeps 3.5 characters of silence after replying
    return tally


def _write(line: serial.Serial, frame: Frame) -> None:
    line.reset_input_buffer()
    line.write(rtu_bytes(frame))
    line.flush()
