"""The node's own detector code (firmware/detectors.py, imported under CPython) over NAB-format
data, scored with NAB's rules beside NAB's Windowed Gaussian detector run on the same files.

    .venv/bin/python bench/edge_nab.py --data ../shared/data/nab --out var/nab-results

Writes OUT/<category>/edge_<file>.csv (timestamp,value,anomaly_score) and
OUT/<category>/windowedGaussian_<file>.csv; prints the scores per profile and ends with a JSON
line. The published Windowed Gaussian score (39.6, standard profile) is over all 58 NAB files;
the folder given may hold fewer, so the reference is recomputed here on exactly those files.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from nab_score import FileSeries, probationary_length, score_corpus  # noqa: E402


def load_detectors():
    spec = importlib.util.spec_from_file_location("detectors", REPO / "firmware" / "detectors.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


det = load_detectors()

TARGET_SPREAD = 64  # counts per standard deviation of the probationary data
Z_HALF = 4.0  # |z| at which the anomaly score is 0.5


def edge_scores(values: np.ndarray, signal: str = "rate", horizon: int = 24) -> list[float]:
    """Run one channel detector as a node would: the probationary stretch stands in for the
    engineer's calibration (offset and resolution), then every sample is checked causally.
    The anomaly score is the node's Z-score, its rate of change over `horizon` samples (in
    probationary standard deviations), or the larger of the two."""
    probation = values[: max(probationary_length(len(values)), 2)]
    centre = float(np.median(probation))
    spread = float(np.std(probation)) or 1.0
    scale = TARGET_SPREAD / spread
    limit = det.MAX_COUNTS - 1
    rate_horizon = horizon if signal != "zscore" else 0
    d = det.ChannelDetector(window_bits=6, z_limit=det.Z_CLAMP, rate_horizon=rate_horizon, rate_limit=limit)
    scores = []
    for v in values:
        q = int(round((v - centre) * scale))
        q = max(-limit, min(limit, q))
        then = d.ring[(d.head - rate_horizon) & d.mask] if rate_horizon and d.filled >= rate_horizon else q
        d.update(q)
        z = abs(d.z16) / det.Z_ONE
        rate = abs(q - then) / TARGET_SPREAD
        s = z if signal == "zscore" else rate if signal == "rate" else max(z, rate)
        scores.append(s / (s + Z_HALF))
    return scores


def windowed_gaussian_scores(values: np.ndarray) -> list[float]:
    """NAB's windowedGaussian detector: window 6400, step 100, one-sided Gaussian tail."""
    window: list[float] = []
    step: list[float] = []
    mean, std = 0.0, 1.0
    scores = []
    for v in values:
        score = 0.0
        if window:
            x = v if v >= mean else 2 * mean - v
            score = 1.0 - 0.5 * math.erfc(((x - mean) / std) / math.sqrt(2))
        if len(window) < 6400:
            window.append(float(v))
            mean, std = float(np.mean(window)), float(np.std(window)) or 1e-6
        else:
            step.append(float(v))
            if len(step) == 100:
                window = window[100:] + step
                step = []
                mean, std = float(np.mean(window)), float(np.std(window)) or 1e-6
        scores.append(score)
    return scores




def data_files(data: Path, windows: dict[str, list]) -> Iterator[tuple[str, Path]]:
    for name in sorted(windows):
        path = data / name
        if path.is_file():
            yield name, path


def read_series(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or {"timestamp", "value"} - set(rows[0]):
        raise ValueError(f"{path}: expected columns timestamp,value")
    return [r["timestamp"] for r in rows], np.array([float(r["value"]) for r in rows])


def write_results(out: Path, name: str, detector: str, stamps: list[str], values: np.ndarray, scores: list[float]) -> None:
    category, file = name.split("/", 1)
    target = out / category / f"{detector}_{file}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score"])
        for t, v, s in zip(stamps, values, scores):
            w.writerow([t, repr(float(v)), f"{s:.6f}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="NAB folder (combined_windows.json, profiles.json, data)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the NAB results files")
    parser.add_argument("--signal", choices=("rate", "zscore", "max"), default="rate",
                        help="which node check gives the anomaly score (default: %(default)s)")
    parser.add_argument("--horizon", type=int, default=24, help="rate-of-change horizon in samples (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.horizon <= det.MAX_HORIZON:
        parser.error(f"--horizon must be 1..{det.MAX_HORIZON}")
    detectors = {
        "edge": lambda values: edge_scores(values, args.signal, args.horizon),
        "windowedGaussian": windowed_gaussian_scores,
    }
    try:
        windows = json.loads((args.data / "combined_windows.json").read_text())
        profiles = json.loads((args.data / "profiles.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"error: {args.data}: {exc}", file=sys.stderr)
        return 2
    files = list(data_files(args.data, windows))
    if not files:
        print(f"error: no data files of combined_windows.json under {args.data}", file=sys.stderr)
        return 2
    series: dict[str, list[FileSeries]] = {d: [] for d in detectors}
    seconds = {d: 0.0 for d in detectors}
    rows = 0
    for n, (name, path) in enumerate(files, 1):
        stamps, values = read_series(path)
        rows += len(values)
        for detector, fn in detectors.items():
            t0 = time.perf_counter()
            scores = fn(values)
            seconds[detector] += time.perf_counter() - t0
            write_results(args.out, name, detector, stamps, values, scores)
            series[detector].append(FileSeries(name, stamps, scores, [tuple(w) for w in windows[name]]))
        print(f"[{n}/{len(files)}] {name}: {len(values)} rows", file=sys.stderr)
    figures: dict[str, object] = {"files": len(files), "rows": rows, "windows": sum(len(windows[n]) for n, _ in files),
                                  "edge_signal": args.signal, "edge_horizon": args.horizon}  # fmt: skip
    print(f"{len(files)} files, {rows} rows, {figures['windows']} anomaly windows; "
          f"edge score from the node's {args.signal} check (horizon {args.horizon} samples)")
    print(f"{'profile':<20} {'edge':>8} {'windowedGaussian':>17} {'ratio':>7}   edge TP/FP/FN")
    for profile, spec in profiles.items():
        edge = score_corpus(series["edge"], spec["CostMatrix"], profile)
        ref = score_corpus(series["windowedGaussian"], spec["CostMatrix"], profile)
        ratio = edge.score / ref.score if ref.score > 0 else float("nan")
        print(f"{profile:<20} {edge.score:8.1f} {ref.score:17.1f} {ratio:7.2f}   "
              f"{edge.true_positives}/{edge.false_positives}/{edge.false_negatives}")  # fmt: skip
        figures[f"edge_{profile}"] = round(edge.score, 2)
        figures[f"windowed_gaussian_{profile}"] = round(ref.score, 2)
        figures[f"ratio_{profile}"] = round(ratio, 3)
    figures["edge_us_per_sample"] = round(1e6 * seconds["edge"] / rows, 2)
    figures["windowed_gaussian_us_per_sample"] = round(1e6 * seconds["windowedGaussian"] / rows, 2)
    print(f"CPython time per sample: edge {figures['edge_us_per_sample']} us, "
          f"windowedGaussian {figures['windowed_gaussian_us_per_sample']} us")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
