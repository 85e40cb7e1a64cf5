"""Which span of time a chart shows and at what resolution.

A page that has not chosen a span sees its data: from the device's first reading in the store
to now, at least MIN_FIT_MS (a demo a minute old fills its chart instead of a sliver of an hour),
at most LONGEST_SPAN_MS. Spans up to LONGEST_RAW_MS are drawn from raw readings (decoded in
memory, so bounded); longer ones from the store's one-minute summaries, which stay when raw
readings are evicted and make a week a few thousand points instead of millions."""

from __future__ import annotations

import math
from typing import Literal

MINUTE_MS = 60_000
MIN_FIT_MS = 30_000  # a chart of a few seconds jumps as it grows; half a minute settles soon
LONGEST_RAW_MS = 3 * 3_600_000
LONGEST_SPAN_MS = 7 * 86_400_000  # also within int32 milliseconds, as series times travel

Resolution = Literal["raw", "minutes"]


def fitted_start(first_ms: int | None, end_ms: int) -> int:
    """Where a span that fits the data starts: the first reading, within the bounds above."""
    if first_ms is None:
        return end_ms - MIN_FIT_MS
    return max(end_ms - LONGEST_SPAN_MS, min(first_ms, end_ms - MIN_FIT_MS))


def resolution(span_ms: int) -> Resolution:
    return "raw" if span_ms <= LONGEST_RAW_MS else "minutes"


def minutes_per_point(span_ms: int, points: int) -> int:
    """Whole minutes per drawn point: one, or as many as keep the points near `points`."""
    return max(1, math.ceil(span_ms / points / MINUTE_MS))
