"""Random and mutated Modbus frames against a running virtual node: every answer must be
the one the Modbus spec prescribes, and the node must keep serving (and sampling)."""

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewayd.acquisition.profiles import edge_node as m
from gatewayd.demo.virtual_node import VirtualNode

UNIT = 5
INPUTS = m.IR_DESCRIPTOR_BASE + m.MAX_CHANNELS * m.IR_DESCRIPTOR_STRIDE
HOLDING = m.HR_CHANNEL_BASE + m.MAX_CHANNELS * m.HR_CHANNEL_STRIDE
RESET_CODE = 4242
BATCH = 100
BATCHES = 100  # 10,000 frames


def expected(pdu: bytes) -> tuple[str, object]:
    """What the spec says the node must answer: ("read", count), ("echo", None), ("exc", codes)."""
    fc = pdu[0]
    if fc in (3, 4):
        if len(pdu) != 5:
            return "exc", {3}
        address, count = struct.unpack(">HH", pdu[1:])
        if not 1 <= count <= 125:
            return "exc", {3}
        if address + count > (HOLDING if fc == 3 else INPUTS):
            return "exc", {2}
        return "read", count
    if fc == 6:
        if len(pdu) != 5:
            return "exc", {3}
        address, value = struct.unpack(">HH", pdu[1:])
        if address == m.HR_RESET:
            return ("echo", None) if value == RESET_CODE else ("exc", {3})
        return "echo_or_exc", {2, 3}
    if fc == 16:
        if len(pdu) < 6:
            return "exc", {3}
        address, count = struct.unpack(">HH", pdu[1:5])
        if not 1 <= count <= 123 or pdu[5] != 2 * count or len(pdu) != 6 + pdu[5]:
            return "exc", {3}
        if address + count > HOLDING:
            return "exc", {2}
        return "echo_or_exc", {2, 3}
    return "exc", {1}


def check(pdu: bytes, reply: bytes) -> None:
    kind, detail = expected(pdu)
    fc = pdu[0]
    if kind == "read":
        assert reply[0] == fc and reply[1] == 2 * detail and len(reply) == 2 + 2 * detail, (pdu, reply)
    elif kind == "exc":
        assert len(reply) == 2 and reply[0] == (fc | 0x80) & 0xFF and reply[1] in detail, (pdu, reply)
    elif kind == "echo":
        assert reply == pdu, (pdu, reply)
    else:
        if reply[0] & 0x80:
            assert len(reply) == 2 and reply[1] in detail, (pdu, reply)
        else:
            assert reply == pdu[:5], (pdu, reply)


addresses = st.one_of(
    st.integers(0, 0xFFFF), st.integers(0, 480), st.sampled_from([0, 16, 17, 22, 23, 143, 144, 427, 428])
)
counts = st.one_of(st.integers(0, 0xFFFF), st.integers(0, 130))
reads = st.builds(lambda fc, a, c: struct.pack(">BHH", fc, a, c), st.sampled_from([3, 4]), addresses, counts)
single = st.builds(
    lambda a, v: struct.pack(">BHH", 6, a, v), addresses, st.one_of(st.integers(0, 0xFFFF), st.just(RESET_CODE))
)
multiple = st.builds(
    lambda a, words, lie: (
        struct.pack(">BHHB", 16, a, max(len(words) + lie, 0), (2 * len(words) + lie) & 0xFF)
        + b"".join(struct.pack(">H", w) for w in words)
    ),
    addresses,
    st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=124),
    st.sampled_from([0, 0, 0, 1, -1]),
)
garbage = st.binary(min_size=1, max_size=253)
mutated = st.builds(
    lambda pdu, pos, byte: pdu[: pos % len(pdu)] + bytes([byte]) + pdu[pos % len(pdu) + 1 :],
    st.one_of(reads, single),
    st.integers(0, 10),
    st.integers(0, 255),
)
pdus = st.one_of(reads, single, multiple, garbage, mutated).filter(lambda p: 1 <= len(p) <= 253)


class Link:
    def __init__(self, port: int):
        self.port = port
        self.tid = 0
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)

    def ask(self, pdu: bytes) -> bytes:
        self.tid = (self.tid + 1) & 0xFFFF
        self.sock.sendall(struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, UNIT) + pdu)
        head = self._exact(7)
        tid, proto, length, unit = struct.unpack(">HHHB", head)
        assert (tid, proto, unit) == (self.tid, 0, UNIT)
        return self._exact(length - 1)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "node closed the connection"
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    state = tmp_path_factory.mktemp("fuzz")
    n = VirtualNode(unit=UNIT, seed=9, extra_args=("--state-dir", str(state)))
    n.start()
    yield n
    n.stop()


@pytest.fixture(autouse=True)
def no_leaked_processes_or_threads():
    yield  # the module-scoped node outlives single tests by design


@settings(
    max_examples=BATCHES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(pdus, min_size=BATCH, max_size=BATCH))
def test_every_frame_gets_the_answer_the_spec_prescribes(node, batch):
    link = Link(node.port)
    try:
        for pdu in batch:
            check(pdu, link.ask(pdu))
    finally:
        link.close()


def test_node_survived_and_kept_sampling(node):
    link = Link(node.port)
    try:
        first = link.ask(struct.pack(">BHH", 4, 0, m.IDENTITY_REGISTERS))[2:]
        regs = struct.unpack(">%dH" % m.IDENTITY_REGISTERS, first)
        assert regs[m.IR_MAGIC] == m.MAGIC
        samples = regs[m.IR_SAMPLE_COUNT] << 16 | regs[m.IR_SAMPLE_COUNT + 1]
        bad = regs[m.IR_BAD_FRAMES] << 16 | regs[m.IR_BAD_FRAMES + 1]
        assert samples > 0 and bad > 0
    finally:
        link.close()
    assert node.alive()


def test_broken_mbap_headers_drop_only_that_connection(node):
    for junk in (b"\x00\x01\x00\x05\x00\x06\x05\x04\x00\x00\x00\x01", b"\x00\x01\x00\x00\xff\xff" + b"x" * 20):
        s = socket.create_connection(("127.0.0.1", node.port), timeout=2)
        s.sendall(junk)
        assert s.recv(10) == b""  # closed by the node
        s.close()
    link = Link(node.port)
    try:
        assert link.ask(struct.pack(">BHH", 4, 0, 1)) == b"\x04\x02\x45\x44"
    finally:
        link.close()
