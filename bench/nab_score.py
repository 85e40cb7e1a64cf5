"""NAB scoring (Numenta Anomaly Benchmark, v1 rules) for the files of a data folder.

Windows from combined_windows.json, cost matrices from profiles.json; the first 15% of each
file is probationary and not scored; in a window, the earliest detection counts with the
scaled sigmoid of its position; detections outside windows cost fpWeight, scaled by their
distance from the previous window; a missed window costs fnWeight. The threshold is the one
that maximises the profile's score over the whole corpus, and the score is normalised so
that detecting nothing is 0 and detecting every window at its start is 100.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PROBATION_PERCENT = 0.15


def scaled_sigmoid(position: float) -> float:
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def probationary_length(rows: int) -> int:
    return min(int(math.floor(PROBATION_PERCENT * rows)), int(PROBATION_PERCENT * 5000))


@dataclass(frozen=True)
class Point:
    score: float
    window: int | None  # index of the window the point lies in, None outside windows
    tp_weight: float  # scaled-sigmoid weight if this point is the window's first detection
    fp_weight: float  # unweighted false-positive cost (negative) outside windows


@dataclass(frozen=True)
class FileSeries:
    name: str
    timestamps: Sequence[str]
    scores: Sequence[float]
    windows: Sequence[tuple[str, str]]


def points_of(series: FileSeries, window_offset: int) -> list[Point]:
    stamps = list(series.timestamps)
    index = {t: i for i, t in enumerate(stamps)}
    limits = []
    for start, end in series.windows:
        limits.append((_find(index, stamps, start), _find(index, stamps, end)))
    probation = probationary_length(len(stamps))
    points = []
    current: int | None = None
    prev_right: int | None = None
    prev_width = 0.0
    w = 0
    for i, score in enumerate(series.scores):
        if current is None and w < len(limits) and i == limits[w][0]:
            current = w
        if current is not None:
            left, right = limits[current]
            width = float(right - left + 1)
            position = -(right - i + 1) / width
            point = Point(score, window_offset + current, scaled_sigmoid(position) / MAX_TP, 0.0)
        else:
            past = 3.0 if prev_right is None else abs(prev_right - i) / (prev_width - 1)
            fp = scaled_sigmoid(past)
            point = Point(score, None, 0.0, fp)
        if i >= probation:
            points.append(point)
        if current is not None and i == limits[current][1]:
            prev_right = limits[current][1]
            prev_width = float(limits[current][1] - limits[current][0] + 1)
            current = None
            w += 1
    return points


def _find(index: dict[str, int], stamps: list[str], stamp: str) -> int:
    """Row of a window edge: NAB's windows carry fractional seconds the files do not."""
    key = stamp.split(".")[0]
    if key in index:
        return index[key]
    # nearest row at or after the edge
    for i, t in enumerate(stamps):
        if t >= key:
            return i
    return len(stamps) - 1


@dataclass(frozen=True)
class ProfileResult:
    profile: str
    score: float
    raw: float
    threshold: float
    true_positives: int
    false_positives: int
    false_negatives: int


def score_corpus(files: Sequence[FileSeries], cost: dict[str, float], profile: str = "standard") -> ProfileResult:
    """Best threshold over the corpus and the normalised score it reaches."""
    points: list[Point] = []
    offset = 0
    for f in files:
        points += points_of(f, offset)
        offset += len(f.windows)
    # As in NAB, a window counts only if some of it lies past the probationary stretch.
    windows = len({p.window for p in points if p.window is not None})
    tp_w, fp_w, fn_w = cost["tpWeight"], cost["fpWeight"], cost["fnWeight"]
    null = -fn_w * windows
    perfect = tp_w * windows
    order = sorted(points, key=lambda p: -p.score)
    best_tp: dict[int, float] = {}
    fp_total = 0.0
    fp_count = 0
    best = (null, math.inf, 0, 0)  # score with nothing detected
    i = 0
    while i < len(order):
        threshold = order[i].score
        # admit every point at this score before evaluating
        while i < len(order) and order[i].score == threshold:
            p = order[i]
            if p.window is not None:
                gain = p.tp_weight * tp_w
                if p.window not in best_tp or gain > best_tp[p.window]:
                    best_tp[p.window] = gain
            else:
                fp_total += p.fp_weight * fp_w
                fp_count += 1
            i += 1
        raw = sum(best_tp.values()) - fn_w * (windows - len(best_tp)) + fp_total
        if raw > best[0]:
            best = (raw, threshold, len(best_tp), fp_count)
    raw, threshold, tps, fps = best
    normalised = 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0
    return ProfileResult(profile, normalised, raw, threshold, tps, fps, windows - tps)
