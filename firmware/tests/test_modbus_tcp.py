import socket
import struct
import time

import regmap
from modbus_pdu import ModbusSlave
from modbus_tcp import ModbusTcpServer

_PORT = 15000 + (time.ticks_ms() % 5000)


def start():
    bank = regmap.RegisterBank()
    bank.set_u16(0, 0x4544)
    bank.set_u16(1, 1)
    port = _PORT
    for attempt in range(20):
        try:
            return ModbusTcpServer(ModbusSlave(bank, 3), port=port + attempt, bind="127.0.0.1"), port + attempt
        except OSError:
            pass
    raise OSError("no free port")


def connect(port):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    return c


def exchange(server, client, frame, expect):
    client.write(frame)
    got = b""
    for _ in range(50):
        server.poll(10)
        client.setblocking(False)
        try:
            chunk = client.read(260)
        except OSError:
            chunk = None
        client.setblocking(True)
        if chunk:
            got += chunk
        if len(got) >= expect:
            break
    return got


def request(tid, unit, pdu):
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def test_read_identity_over_tcp():
    server, port = start()
    client = connect(port)
    try:
        got = exchange(server, client, request(0x1234, 3, b"\x04\x00\x00\x00\x02"), 13)
        assert got == struct.pack(">HHHB", 0x1234, 0, 7, 3) + b"\x04\x04\x45\x44\x00\x01", got
    finally:
        client.close()
        server.close()


def test_split_and_pipelined_frames():
    server, port = start()
    client = connect(port)
    try:
        frame = request(1, 3, b"\x04\x00\x01\x00\x01")
        client.write(frame[:4])
        server.poll(10)
        both = frame[4:] + request(2, 3, b"\x04\x00\x00\x00\x01")
        got = exchange(server, client, both, 22)
        assert got[:2] == b"\x00\x01" and got[9:11] == b"\x00\x01", got
        assert got[11:13] == b"\x00\x02" and got[20:22] == b"\x45\x44", got
    finally:
        client.close()
        server.close()


def test_wrong_unit_gets_gateway_exception():
    server, port = start()
    client = connect(port)
    try:
        got = exchange(server, client, request(5, 9, b"\x04\x00\x00\x00\x01"), 9)
        assert got[7:9] == b"\x84\x0b", got
    finally:
        client.close()
        server.close()


def test_bad_protocol_id_drops_connection_and_server_keeps_serving():
    server, port = start()
    bad = connect(port)
    good = None
    try:
        bad.write(b"\x00\x01\x00\x07\x00\x06\x03\x04\x00\x00\x00\x01")
        for _ in range(5):
            server.poll(10)
        assert server.dropped == 1 and not server.connections
        good = connect(port)
        got = exchange(server, good, request(3, 3, b"\x04\x00\x01\x00\x01"), 11)
        assert got[9:11] == b"\x00\x01", got
    finally:
        bad.close()
        if good:
            good.close()
        server.close()
