import struct

import regmap
from modbus_pdu import ModbusSlave


def make_slave(on_write=None):
    bank = regmap.RegisterBank(input_count=20, holding_count=10)
    for i in range(20):
        bank.set_u16(i, 1000 + i)
    return ModbusSlave(bank, unit=7, on_write=on_write)


def reply(slave, pdu):
    n = slave.handle(bytearray(pdu), 0, len(pdu))
    return bytes(slave.response[:n])


def test_read_input_registers_returns_big_endian_words():
    slave = make_slave()
    assert reply(slave, b"\x04\x00\x02\x00\x03") == b"\x04\x06" + struct.pack(">HHH", 1002, 1003, 1004)


def test_read_holding_registers_reads_holding_bank():
    slave = make_slave()
    struct.pack_into(">H", slave.bank.holding, 2 * 9, 0xBEEF)
    assert reply(slave, b"\x03\x00\x09\x00\x01") == b"\x03\x02\xbe\xef"


def test_read_past_end_is_illegal_address():
    slave = make_slave()
    assert reply(slave, b"\x04\x00\x12\x00\x03") == b"\x84\x02"
    assert slave.exceptions == 1


def test_read_count_zero_or_over_125_is_illegal_value():
    slave = make_slave()
    assert reply(slave, b"\x04\x00\x00\x00\x00") == b"\x84\x03"
    assert reply(slave, b"\x04\x00\x00\x00\x7e") == b"\x84\x03"


def test_unknown_function_is_illegal_function():
    assert reply(make_slave(), b"\x2b\x0e\x01\x00") == b"\xab\x01"


def test_truncated_read_is_illegal_value():
    assert reply(make_slave(), b"\x03\x00\x00\x00") == b"\x83\x03"


def test_write_without_handler_is_refused():
    slave = make_slave()
    assert reply(slave, b"\x06\x00\x01\x00\x05") == b"\x86\x02"
    assert slave.bank.holding_u16(1) == 0


def test_write_single_goes_through_handler_and_echoes():
    seen = []

    def on_write(address, data, offset, count):
        seen.append((address, bytes(data[offset : offset + 2 * count])))
        return 0

    slave = make_slave(on_write)
    assert reply(slave, b"\x06\x00\x04\x12\x34") == b"\x06\x00\x04\x12\x34"
    assert seen == [(4, b"\x12\x34")]


def test_write_multiple_checks_byte_count_and_range():
    seen = []

    def on_write(address, data, offset, count):
        seen.append((address, count))
        return 0

    slave = make_slave(on_write)
    assert reply(slave, b"\x10\x00\x02\x00\x02\x04\x00\x01\x00\x02") == b"\x10\x00\x02\x00\x02"
    assert reply(slave, b"\x10\x00\x02\x00\x02\x03\x00\x01\x00") == b"\x90\x03"
    assert reply(slave, b"\x10\x00\x09\x00\x02\x04\x00\x01\x00\x02") == b"\x90\x02"
    assert seen == [(2, 2)]


def test_handler_exception_code_is_returned():
    slave = make_slave(lambda address, data, offset, count: 3)
    assert reply(slave, b"\x06\x00\x00\xff\xff") == b"\x86\x03"
