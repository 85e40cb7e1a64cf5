"""The node's own detector code (firmware/detectors.py, imported under CPython) over NAB-format
data, scored with NAB's rules beside NAB's Windowed Gaussian detector run on the same files.

    .venv/bin/python bench/edge_nab.py --data ../shared/data/nab --out var/nab-results

Each file is one channel, commissioned from its probationary stretch as an engineer would
from a run of normal operation (`commission`), then run sample by sample through the node's
ChannelDetector. A node reports detections, not a score: the anomaly score is 1 at each sample
where the node counts a detection (a check turns on, as node.py counts them) and 0 elsewhere,
so NAB's threshold sweep has nothing to tune and the score is the node's as configured.

Writes OUT/<category>/edge_<file>.csv (timestamp,value,anomaly_score) and
OUT/<category>/windowedGaussian_<file>.csv; prints the scores per profile (with --ablation,
also the edge score with each check left out and without the off-delay) and ends with a JSON
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
from dataclasses import dataclass, replace
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
CHECKS = ("bounds", "stuck", "rate", "zscore")


@dataclass(frozen=True)
class EdgeSettings:
    """How the bench commissions a channel. Limits are in probationary standard deviations
    (rate: change over `horizon` samples; zscore: against the node's 64-sample window);
    bounds are the probationary range widened by `bounds_margin` of that range each side."""

    checks: frozenset[str] = frozenset({"bounds", "stuck", "rate"})
    rate_limit: float = 10.0
    horizon: int = 24
    z_limit: float = 6.0
    bounds_margin: float = 0.25
    clear_after: int = 128


def commission(values: np.ndarray, settings: EdgeSettings) -> tuple[float, float, dict]:
    """The channel's offset and counts per unit, and its detector's arguments, from the
    probationary stretch only. The stuck check is left off where that stretch already holds
    a flat window: such a signal is flat in normal operation."""
    probation = values[: max(probationary_length(len(values)), 2)]
    centre = float(np.median(probation))
    scale = TARGET_SPREAD / (float(np.std(probation)) or 1.0)
    low, high = float(probation.min()), float(probation.max())
    margin = settings.bounds_margin * (high - low)
    on, off = det.SEVERITY_WARNING, det.SEVERITY_OFF
    use = settings.checks
    stuck = on if "stuck" in use and not _flat_somewhere(to_counts(probation, centre, scale)) else off
    severities = (
        det.SEVERITY_CRITICAL,
        stuck,
        on if "bounds" in use else off,
        on if "bounds" in use else off,
        on if "zscore" in use else off,
        on if "rate" in use else off,
    )
    kwargs = {
        "window_bits": det.MAX_WINDOW_BITS,
        "z_limit": min(int(settings.z_limit * det.Z_ONE), det.Z_CLAMP),
        "rate_horizon": settings.horizon,
        "rate_limit": int(settings.rate_limit * TARGET_SPREAD),
        "low": to_counts(np.array([low - margin]), centre, scale)[0],
        "high": to_counts(np.array([high + margin]), centre, scale)[0],
        "clear_after": settings.clear_after,
        "severities": severities,
    }
    return centre, scale, kwargs


def to_counts(values: np.ndarray, centre: float, scale: float) -> list[int]:
    limit = det.MAX_COUNTS - 1
    return [max(-limit, min(limit, round((v - centre) * scale))) for v in values]


def _flat_somewhere(counts: list[int]) -> bool:
    d = det.ChannelDetector(window_bits=det.MAX_WINDOW_BITS)
    for q in counts:
        d.update(q)
        if d.raw & det.FLAG_STUCK:
            return True
    return False


def edge_scores(values: np.ndarray, settings: EdgeSettings) -> list[float]:
    """1.0 where the node counts a detection, else 0.0."""
    centre, scale, kwargs = commission(values, settings)
    d = det.ChannelDetector(**kwargs)
    previous = 0
    scores = []
    for q in to_counts(values, centre, scale):
        flags = d.update(q)
        scores.append(1.0 if flags & ~previous else 0.0)
        previous = flags
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


def write_results(
    out: Path, name: str, detector: str, stamps: list[str], values: np.ndarray, scores: list[float]
) -> None:
    category, file = name.split("/", 1)
    target = out / category / f"{detector}_{file}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score"])
        for t, v, s in zip(stamps, values, scores):
            w.writerow([t, repr(float(v)), f"{s:.6f}"])


def checks_arg(text: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    if not names or names - set(CHECKS):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(CHECKS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--data", type=Path, required=True, help="NAB folder (combined_windows.json, profiles.json, data)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the NAB results files")
    defaults = EdgeSettings()
    parser.add_argument(
        "--checks",
        type=checks_arg,
        default=defaults.checks,
        help=f"the node's checks to commission (default: {','.join(sorted(defaults.checks))})",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=defaults.rate_limit,
        help="rate check: change over the horizon, in probationary std (default: %(default)s)",
    )
    parser.add_argument(
        "--horizon", type=int, default=defaults.horizon, help="rate horizon in samples (default: %(default)s)"
    )
    parser.add_argument(
        "--z-limit",
        type=float,
        default=defaults.z_limit,
        help="zscore check's limit, when commissioned (default: %(default)s)",
    )
    parser.add_argument(
        "--bounds-margin",
        type=float,
        default=defaults.bounds_margin,
        help="bounds: the probationary range widened by this fraction of it each side (default: %(default)s)",
    )
    parser.add_argument(
        "--clear-after",
        type=int,
        default=defaults.clear_after,
        help="misses in a row before an active check clears (default: %(default)s)",
    )
    parser.add_argument(
        "--ablation", action="store_true", help="also score the node with each check left out, and with no off-delay"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.horizon <= det.MAX_HORIZON:
        parser.error(f"--horizon must be 1..{det.MAX_HORIZON}")
    if not 1 <= args.clear_after <= det.MAX_CLEAR_AFTER:
        parser.error(f"--clear-after must be 1..{det.MAX_CLEAR_AFTER}")
    if args.rate_limit <= 0 or args.z_limit <= 0 or args.bounds_margin < 0:
        parser.error("--rate-limit and --z-limit must be above 0, --bounds-margin at least 0")
    settings = EdgeSettings(
        args.checks, args.rate_limit, args.horizon, args.z_limit, args.bounds_margin, args.clear_after
    )
    variants = {"edge": settings}
    if args.ablation:
        for check in sorted(settings.checks):
            if len(settings.checks) > 1:
                variants[f"without {check}"] = replace(settings, checks=settings.checks - {check})
        variants["clear_after 1"] = replace(settings, clear_after=1)
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
    detectors = {name: (lambda values, s=s: edge_scores(values, s)) for name, s in variants.items()}
    detectors["windowedGaussian"] = windowed_gaussian_scores
    series: dict[str, list[FileSeries]] = {d: [] for d in detectors}
    seconds = {d: 0.0 for d in detectors}
    rows = 0
    for n, (name, path) in enumerate(files, 1):
        try:
            stamps, values = read_series(path)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        rows += len(values)
        for detector, fn in detectors.items():
            t0 = time.perf_counter()
            scores = fn(values)
            seconds[detector] += time.perf_counter() - t0
            if detector in ("edge", "windowedGaussian"):
                write_results(args.out, name, detector, stamps, values, scores)
            series[detector].append(FileSeries(name, stamps, scores, [tuple(w) for w in windows[name]]))
        print(f"[{n}/{len(files)}] {name}: {len(values)} rows", file=sys.stderr)
    figures: dict[str, object] = {
        "files": len(files),
        "rows": rows,
        "windows": sum(len(windows[n]) for n, _ in files),
        "edge_checks": ",".join(sorted(settings.checks)),
        "edge_rate_limit": settings.rate_limit,
        "edge_horizon": settings.horizon,
        "edge_bounds_margin": settings.bounds_margin,
        "edge_clear_after": settings.clear_after,
    }
    if "zscore" in settings.checks:
        figures["edge_z_limit"] = settings.z_limit
    print(
        f"{len(files)} files, {rows} rows, {figures['windows']} anomaly windows; edge: the node's detections with "
        f"{', '.join(sorted(settings.checks))} commissioned from each file's probationary stretch"
    )
    print(f"{'profile':<20} {'edge':>8} {'windowedGaussian':>17} {'ratio':>7}   edge TP/FP/FN")
    for profile, spec in profiles.items():
        edge = score_corpus(series["edge"], spec["CostMatrix"], profile)
        ref = score_corpus(series["windowedGaussian"], spec["CostMatrix"], profile)
        ratio = edge.score / ref.score if ref.score > 0 else float("nan")
        print(
            f"{profile:<20} {edge.score:8.1f} {ref.score:17.1f} {ratio:7.2f}   "
            f"{edge.true_positives}/{edge.false_positives}/{edge.false_negatives}"
        )
        figures[f"edge_{profile}"] = round(edge.score, 2)
        figures[f"windowed_gaussian_{profile}"] = round(ref.score, 2)
        figures[f"ratio_{profile}"] = round(ratio, 3)
    if args.ablation:
        standard = profiles.get("standard", next(iter(profiles.values())))["CostMatrix"]
        print("ablation, standard profile:")
        for variant in variants:
            if variant != "edge":
                result = score_corpus(series[variant], standard)
                print(
                    f"  {variant:<18} {result.score:8.1f}   {result.true_positives}/{result.false_positives}/{result.false_negatives}"
                )
                figures[f"ablation_{variant.replace(' ', '_')}"] = round(result.score, 2)
    figures["edge_us_per_sample"] = round(1e6 * seconds["edge"] / rows, 2)
    figures["windowed_gaussian_us_per_sample"] = round(1e6 * seconds["windowedGaussian"] / rows, 2)
    print(
        f"CPython time per sample: edge {figures['edge_us_per_sample']} us, "
        f"windowedGaussian {figures['windowed_gaussian_us_per_sample']} us"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
