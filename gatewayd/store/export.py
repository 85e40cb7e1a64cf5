"""`gatewayd export`: raw readings of chosen channels and a time range as CSV or JSON lines."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from typing import TextIO

import numpy as np

from gatewayd.clock import iso, parse_time
from gatewayd.store.database import Store

__all__ = ["FORMATS", "export_csv", "export_readings", "iso", "parse_time", "select_channels", "what_the_store_holds"]

FIELDS = ("timestamp", "device", "channel", "unit", "value")
FORMATS = ("csv", "jsonl")
SHOWN_CHANNELS = 10  # channels named in a message before "and N more"


def select_channels(store: Store, wanted: Sequence[str]) -> list[tuple[int, str, str, str]]:
    known = store.channels()
    if not wanted:
        return known
    by_name = {f"{device}/{channel}": row for row in known for _, device, channel, _ in [row]}
    missing = [w for w in wanted if w not in by_name]
    if missing:
        raise KeyError(f"unknown channel(s) {', '.join(missing)}; known: {_brief(sorted(by_name)) or 'none'}")
    return [by_name[w] for w in wanted]


def export_readings(
    store: Store,
    out: TextIO,
    channels: Sequence[str],
    start_ms: int,
    end_ms: int,
    *,
    mark_clock: bool = False,
    fmt: str = "csv",
) -> tuple[int, int]:
    """Write `timestamp,device,channel,unit,value` rows in time order per channel, as CSV or as
    one JSON object per line (with `mark_clock`, a `clock` field: `unsynced` for readings
    stamped before the clock was synchronised); returns (rows, rows stamped before the clock
    was synchronised)."""
    fields = FIELDS + (("clock",) if mark_clock else ())
    write_row = _row_writer(out, fields, fmt)
    rows = unsynced = 0
    for channel_id, device, channel, unit in select_channels(store, channels):
        block = store.readings(device, channel, start_ms, end_ms)
        spans = store.unsynced_spans(channel_id, start_ms, end_ms)
        marks = np.zeros(len(block), dtype=bool)
        for first, last in spans:
            marks |= (block.ts_ms >= first) & (block.ts_ms <= last)
        unsynced += int(marks.sum())
        for ts, value, mark in zip(block.ts_ms.tolist(), block.values.tolist(), marks.tolist()):
            write_row([iso(ts), device, channel, unit, value] + (["unsynced" if mark else ""] if mark_clock else []))
        rows += len(block)
    return rows, unsynced


def export_csv(
    store: Store, out: TextIO, channels: Sequence[str], start_ms: int, end_ms: int, *, mark_clock: bool = False
) -> tuple[int, int]:
    return export_readings(store, out, channels, start_ms, end_ms, mark_clock=mark_clock, fmt="csv")


def _row_writer(out: TextIO, fields: tuple[str, ...], fmt: str) -> Callable[[list], None]:
    """A function writing one reading; CSV gets its header here, JSON lines need none."""
    if fmt == "jsonl":
        return lambda row: out.write(json.dumps(dict(zip(fields, row))) + "\n")
    if fmt != "csv":
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    writer = csv.writer(out)
    writer.writerow(fields)
    return lambda row: writer.writerow([repr(v) if isinstance(v, float) else v for v in row])


def what_the_store_holds(store: Store, channels: Sequence[str]) -> str:
    """For an export that matched nothing: the time span each chosen channel holds, in the form
    --from and --to take, or that it holds no readings."""
    chosen = select_channels(store, channels)
    if not chosen:
        return "the store has no channels yet"
    spans = []
    for channel_id, device, channel, _ in chosen[:SHOWN_CHANNELS]:
        span = store.reading_span(channel_id)
        held = f"readings from {iso(span[0])} to {iso(span[1])}" if span else "no readings"
        spans.append(f"{device}/{channel} holds {held}")
    more = len(chosen) - SHOWN_CHANNELS
    return "; ".join(spans) + (f"; and {more} more channels" if more > 0 else "")


def _brief(names: Sequence[str]) -> str:
    more = len(names) - SHOWN_CHANNELS
    return ", ".join(names[:SHOWN_CHANNELS]) + (f" and {more} more" if more > 0 else "")
