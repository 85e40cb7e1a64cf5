"""Multi-channel time series for training and evaluation: from a CSV file or from the store.
A series is (ts_ms (n,) int64 in time order, values (n, channels) float64 with NaN for a
channel that has no sample at that time, channel names)."""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Sequence

import numpy as np

from gatewayd.errors import GatewayError
from gatewayd.store.database import Store


class SeriesError(GatewayError, ValueError):
    """Input that cannot be read as a series; the message names file, line and column."""


def _parse_time(text: str) -> int:
    try:
        number = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    return int(number if number > 1e11 else number * 1000)  # epoch ms, or epoch seconds


def read_csv(path: Path, channels: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A CSV whose first column is the time (ISO 8601, UTC if no zone, or epoch seconds or
    milliseconds) and whose other columns are channels; `,` or `;` separated. An empty cell
    is a missing sample."""
    with open(path, newline="", encoding="utf-8") as f:
        head = f.read(4096)
        f.seek(0)
        delimiter = ";" if head.count(";") > head.count(",") else ","
        rows = csv.reader(f, delimiter=delimiter)
        try:
            header = next(rows)
        except StopIteration:
            raise SeriesError(f"{path}: empty file") from None
        names = [h.strip() for h in header[1:]]
        wanted = list(channels) if channels else names
        missing = [c for c in wanted if c not in names]
        if missing:
            raise SeriesError(f"{path}: no column {', '.join(map(repr, missing))}; columns: {', '.join(names)}")
        columns = [names.index(c) + 1 for c in wanted]
        ts: list[int] = []
        values: list[list[float]] = []
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            try:
                ts.append(_parse_time(row[0]))
            except ValueError:
                raise SeriesError(f"{path}:{line}: cannot read the time {row[0]!r}") from None
            out = []
            for c in columns:
                cell = row[c].strip() if c < len(row) else ""
                try:
                    out.append(float(cell) if cell else math.nan)
                except ValueError:
                    raise SeriesError(f"{path}:{line}: column {names[c - 1]!r}: not a number: {cell!r}") from None
            values.append(out)
    if not ts:
        raise SeriesError(f"{path}: no rows")
    t = np.array(ts, dtype=np.int64)
    v = np.array(values, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    return t[order], v[order], wanted


def from_store(
    store: Store, device: str, channels: Sequence[str] | None, start_ms: int, end_ms: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A device's channels from the store, aligned on their timestamps (a poll reads every
    channel of a device at once, so they share them)."""
    known = [c for _, d, c, _ in store.channels() if d == device]
    if not known:
        raise SeriesError(f"no device {device!r} in the store")
    wanted = list(channels) if channels else known
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise SeriesError(
            f"device {device!r} has no channel {', '.join(map(repr, unknown))}; it has {', '.join(known)}"
        )
    blocks = [store.readings(device, c, start_ms, end_ms) for c in wanted]
    ts = np.unique(np.concatenate([b.ts_ms for b in blocks])) if blocks else np.zeros(0, dtype=np.int64)
    values = np.full((len(ts), len(wanted)), np.nan)
    for i, b in enumerate(blocks):
        values[np.searchsorted(ts, b.ts_ms), i] = b.values
    return ts, values, wanted


def sample_period_s(ts_ms: np.ndarray) -> float:
    """The typical step between samples (median), in seconds."""
    if len(ts_ms) < 2:
        return 1.0
    step = float(np.median(np.diff(ts_ms))) / 1000.0
    return step if step > 0 else 1.0
