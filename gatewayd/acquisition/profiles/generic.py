"""Any Modbus device, described register by register in the configuration. Contiguous
registers of one table are read in one request (at most 125 registers or 2000 bits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gatewayd.acquisition.registers import decode, words_for
from gatewayd.config import RegisterSection

MAX_REGISTERS = 125
MAX_BITS = 2000


@dataclass(frozen=True)
class Request:
    table: str
    address: int
    count: int
    fields: tuple[tuple[RegisterSection, int], ...]  # (definition, offset in the response)


def size_of(r: RegisterSection) -> int:
    return 1 if r.type == "bit" else words_for(r.type)


def plan(registers: Sequence[RegisterSection]) -> list[Request]:
    """Requests covering every definition: sorted by table and address, merged while they
    touch or overlap and fit the per-request limit."""
    requests: list[Request] = []
    for table in ("holding", "input", "coil", "discrete"):
        limit = MAX_BITS if table in ("coil", "discrete") else MAX_REGISTERS
        defs = sorted((r for r in registers if r.table == table), key=lambda r: (r.address, r.name))
        start = end = -1
        fields: list[tuple[RegisterSection, int]] = []
        for r in defs:
            r_end = r.address + size_of(r)
            if fields and r.address <= end and max(end, r_end) - start <= limit:
                end = max(end, r_end)
            else:
                if fields:
                    requests.append(Request(table, start, end - start, tuple(fields)))
                start, end, fields = r.address, r_end, []
            fields.append((r, r.address - start))
        if fields:
            requests.append(Request(table, start, end - start, tuple(fields)))
    return requests


def values(request: Request, response: Sequence[int] | Sequence[bool]) -> list[tuple[str, float]]:
    out = []
    for r, offset in request.fields:
        if r.type == "bit":
            raw: float = 1.0 if response[offset] else 0.0
        else:
            raw = float(decode(response, offset, r.type, word_order=r.word_order, byte_order=r.byte_order))
        out.append((r.name, raw * r.scale + r.offset))
    return out


class GenericProfile:
    def __init__(self, registers: Sequence[RegisterSection]):
        self.registers = list(registers)
        self.requests = plan(self.registers)

    async def describe(self, link, unit: int) -> tuple[dict, list[tuple[str, str]]]:
        return {"requests": len(self.requests)}, [(r.name, r.unit) for r in self.registers]

    async def read(self, link, unit: int) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for req in self.requests:
            out += values(req, await link.read(req.table, req.address, req.count, unit))
        return out
