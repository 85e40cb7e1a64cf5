import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.acquisition.registers import decode, decode_text, words_for


def to_registers(raw: bytes) -> list[int]:
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


@given(st.floats(width=32, allow_nan=False))
def test_float32_high_word_first_round_trips(value):
    regs = to_registers(struct.pack(">f", value))
    assert decode(regs, 0, "float32") == value


@given(st.floats(allow_nan=False))
def test_float64_little_word_order_round_trips(value):
    regs = to_registers(struct.pack(">d", value))
    assert decode(list(reversed(regs)), 0, "float64", word_order="little") == value


@given(st.integers(-(2**31), 2**31 - 1))
def test_int32_byte_swapped_round_trips(value):
    regs = to_registers(struct.pack(">i", value))
    swapped = [((w & 0xFF) << 8) | (w >> 8) for w in regs]
    assert decode(swapped, 0, "int32", byte_order="little") == value


def test_known_vector_abcd_and_cdab():
    # 123.456 as float32 is 0x42F6E979: ABCD sends 0x42F6 first, CDAB sends 0xE979 first.
    assert decode([0x42F6, 0xE979], 0, "float32") == pytest.approx(123.456, rel=1e-6)
    assert decode([0xE979, 0x42F6], 0, "float32", word_order="little") == pytest.approx(123.456, rel=1e-6)
    assert decode([0xFFFF], 0, "int16") == -1
    assert decode([0xFFFF], 0, "uint16") == 65535


def test_nan_survives_decoding():
    assert math.isnan(decode(to_registers(struct.pack(">f", float("nan"))), 0, "float32"))


def test_short_read_names_the_arithmetic():
    with pytest.raises(ValueError, match="float32 needs 2 registers at offset 1, but only 2 were read"):
        decode([1, 2], 1, "float32")


def test_words_for():
    assert [words_for(t) for t in ("int16", "uint32", "float32", "float64")] == [1, 2, 2, 4]


def test_text_stops_at_nul():
    assert decode_text([0x6D33, 0x2F68, 0x0000]) == "m3/h"
    assert decode_text([0x4100, 0x4242]) == "A"
