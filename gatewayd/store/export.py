"""`gatewayd export`: raw readings of chosen channels and a time range as CSV."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import TextIO

import numpy as np

from gatewayd.clock import iso, parse_time
from gatewayd.store.database import Store

__all__ = ["export_csv", "iso", "parse_time", "select_channels"]


def select_channels(store: Store, wanted: Sequence[str]) -> list[tuple[int, str, str, str]]:
    known = store.channels()
    if not wanted:
        return known
    by_name = {f"{device}/{channel}": row for row in known for _, device, channel, _ in [row]}
    missing = [w for w in wanted if w not in by_name]
    if missing:
        raise KeyError(f"unknown channel(s) {', '.join(missing)}; known: {', '.join(sorted(by_name)) or 'none'}")
    return [by_name[w] for w in wanted]


def export_csv(
    store: Store, out: TextIO, channels: Sequence[str], start_ms: int, end_ms: int, *, mark_clock: bool = False
) -> tuple[int, int]:
    """Write `timestamp,device,channel,unit,value` rows in time order per channel (with
    `mark_clock`, a `clock` column: `unsynced` for readings stamped before the clock was
    synchronised); returns (rows, rows stamped before the clock was synchronised)."""
    writer = csv.writer(out)
    writer.writerow(["timestamp", "device", "channel", "unit", "value"] + (["clock"] if mark_clock else []))
    rows = unsynced = 0
    for channel_id, device, channel, unit in select_channels(store, channels):
        block = store.readings(device, channel, start_ms, end_ms)
        spans = store.unsynced_spans(channel_id, start_ms, end_ms)
        marks = np.zeros(len(block), dtype=bool)
        for first, last in spans:
            marks |= (block.ts_ms >= first) & (block.ts_ms <= last)
        unsynced += int(marks.sum())
        for ts, value, mark in zip(block.ts_ms.tolist(), block.values.tolist(), marks.tolist()):
            writer.writerow(
                [iso(ts), device, channel, unit, repr(value)] + (["unsynced" if mark else ""] if mark_clock else [])
            )
        rows += len(block)
    return rows, unsynced
