"""Decoding Modbus register words into values. Pure functions, no I/O."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Literal

Order = Literal["big", "little"]

_FORMATS = {"float32": "f", "float64": "d", "int32": "i", "uint32": "I", "int16": "h", "uint16": "H"}
_WORDS = {"float32": 2, "float64": 4, "int32": 2, "uint32": 2, "int16": 1, "uint16": 1}


def words_for(data_type: str) -> int:
    """Number of 16-bit registers a value of `data_type` occupies."""
    return _WORDS[data_type]


def decode(
    registers: Sequence[int], offset: int, data_type: str, *, word_order: Order = "big", byte_order: Order = "big"
) -> int | float:
    """Decode one value starting at registers[offset].

    word_order "big" means the first register holds the most significant word (ABCD);
    byte_order "little" swaps the two bytes inside each register (BADC).
    """
    count = _WORDS[data_type]
    if offset < 0 or offset + count > len(registers):
        raise ValueError(f"{data_type} needs {count} registers at offset {offset}, but only {len(registers)} were read")
    words = list(registers[offset : offset + count])
    if word_order == "little":
        words.reverse()
    raw = b"".join(struct.pack("<H" if byte_order == "little" else ">H", w & 0xFFFF) for w in words)
    return struct.unpack(">" + _FORMATS[data_type], raw)[0]


def decode_text(registers: Sequence[int]) -> str:
    """ASCII text, two characters per register, high byte first, NUL padded."""
    raw = b"".join(struct.pack(">H", w & 0xFFFF) for w in registers)
    return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace")
