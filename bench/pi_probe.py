"""What a gateway's CPU and memory see when it trains its first model and scores windows,
measured in the Python this runs in: the training wall time, the per-window scoring time
(p50, p99) and the peak resident memory after import, after training and after scoring.

    .venv/bin/python bench/pi_probe.py [--minutes 5] [--windows 300] [--trees 100] [--channels 4]

bench/emulated_pi.py runs it inside arm64 and amd64 Debian roots where the gateway is installed
as a Debian package (/opt/edge-gateway/bin/python); so this file needs only the standard
library, numpy and `gatewayd` (scikit-learn only through gatewayd's training code), and writes
nothing outside a temporary folder.

The path is the daemon's own (gatewayd/detection/stage.py): synthetic pump polls (pressure,
flow, temperature, current; speed changes every tens of seconds; numpy default_rng(seed))
every --period seconds go through DeviceWindows with the default feature spec; the windows
collected for --minutes are written as a local training job and trained by
gatewayd.detection.local_training.main, signed with the gateway's own key, installed in a
ModelStore and loaded into a Scorer and a Detector. The daemon trains in a child process; here
the job runs in-process, so the peak RSS after training includes scikit-learn and the fit
(the child's memory, on top of the daemon's). train_s is that call alone; importing the
training code (scikit-learn), once per child, is import_training_s. Each of the next --windows
windows is timed from the poll that closes it to the end of Detector.window (window features,
scaling, the three models, rules, baseline, drift), with no warm-up, as the daemon's first
windows after a model loads.

Prints a few lines to stderr and one JSON object to stdout: python, machine, train_s,
import_training_s, score_p50_ms, score_p99_ms, rss_import_mb, rss_train_mb, rss_peak_mb
(ru_maxrss, MiB), windows, trees, minutes, channels.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gatewayd.config import DetectionSection, ModelsSection
from gatewayd.detection import local_training
from gatewayd.detection.detector import Detector, DriftSettings
from gatewayd.detection.stage import KEEP_BYTES_TOTAL, KEEP_WINDOWS_MAX, default_spec, rule_settings
from gatewayd.detection.windows import DeviceWindows, RecentWindows
from gatewayd.models import MIN_TRAINING_WINDOWS
from gatewayd.models.install import ModelStore
from gatewayd.models.scorer import Scorer

DEVICE = "pump1"
NAMED = ("pressure", "flow", "temperature", "current")


def rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def pump(seconds: float, period_s: float, channels: int, seed: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Polls of a pump (timestamps in ms, channel names, values (n, channels)): its speed steps
    to a new level every 20-60 s and ramps there in a few seconds; pressure, flow and current
    follow the speed (affinity laws), the temperature lags it by minutes; channels past the
    fourth are vibration-like mixes of the speed. Noise on every channel."""
    rng = np.random.default_rng(seed)
    n = int(seconds / period_s)
    t = np.arange(n) * period_s
    target = np.empty(n)
    i = 0
    while i < n:
        hold = int(rng.uniform(20.0, 60.0) / period_s)
        target[i : i + hold] = rng.uniform(0.6, 1.0)
        i += hold
    speed = np.empty(n)
    level, ramp = target[0], min(1.0, period_s / 3.0)  # a ~3 s first-order ramp
    for k in range(n):
        level += ramp * (target[k] - level)
        speed[k] = level
    heat = np.empty(n)
    temp, lag = 40.0 + 15.0 * speed[0], min(1.0, period_s / 120.0)
    for k in range(n):
        temp += lag * (40.0 + 15.0 * speed[k] - temp)
        heat[k] = temp
    columns = [
        4.0 * speed**2 + rng.normal(0, 0.03, n),  # pressure, bar
        30.0 * speed + rng.normal(0, 0.3, n),  # flow, m3/h
        heat + rng.normal(0, 0.1, n),  # temperature, degC
        2.0 + 8.0 * speed**3 + rng.normal(0, 0.08, n),  # current, A
    ]
    names = list(NAMED)
    for extra in range(4, channels):
        columns.append(
            rng.uniform(0.5, 2.0) * speed + 0.2 * np.sin(2 * np.pi * t / rng.uniform(5, 30)) + rng.normal(0, 0.05, n)
        )
        names.append(f"vibration{extra - 3}")
    values = np.column_stack(columns[:channels])
    ts_ms = 1_700_000_000_000 + np.round(t * 1000).astype(np.int64)
    return ts_ms, names[:channels], values


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main(argv: list[str] | None = None) -> int:
    d = DetectionSection()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training data (default: %(default)s)")
    parser.add_argument("--windows", type=int, default=300, help="windows scored and timed (default: %(default)s)")
    parser.add_argument(
        "--trees", type=int, default=d.trees, help="isolation trees (default: %(default)s, the daemon's)"
    )
    parser.add_argument("--channels", type=int, default=4, help="pump channels (default: %(default)s)")
    parser.add_argument("--period", type=float, default=0.5, help="poll period, s (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.channels < 1 or args.windows < 1 or args.period <= 0:
        parser.error("--channels and --windows must be at least 1, --period positive")
    rss_import = rss_mb()

    # the daemon's default spec for a device whose polls carry these channels (sorted, as offer() does)
    total_s = args.minutes * 60 + (args.windows + 2) * d.hop_s + d.window_s
    ts_ms, names, values = pump(total_s, args.period, args.channels, args.seed)
    order = sorted(range(len(names)), key=names.__getitem__)
    poll_names = tuple(names[i] for i in order)
    values = values[:, order]
    spec = default_spec(d, list(poll_names), args.period)
    windows = DeviceWindows(spec)
    collected = RecentWindows(KEEP_BYTES_TOTAL, least=2 * MIN_TRAINING_WINDOWS, most=KEEP_WINDOWS_MAX)
    train_until = ts_ms[0] + int(args.minutes * 60_000)
    k = 0
    while k < len(ts_ms) and ts_ms[k] < train_until:
        for end_ms, features in windows.add(int(ts_ms[k]), poll_names, values[k]):
            collected.append(end_ms, features, DEVICE)
        k += 1
    rows = list(collected)
    if len(rows) < MIN_TRAINING_WINDOWS:
        parser.error(f"--minutes {args.minutes:g} gives {len(rows)} windows; training needs {MIN_TRAINING_WINDOWS}")
    print(
        f"python {platform.python_version()} on {platform.machine()}; {args.minutes:g} min of {args.channels} channels"
        f" every {args.period:g} s: {len(rows)} windows x {len(spec.names)} features ({', '.join(spec.names)})",
        file=sys.stderr,
    )

    with tempfile.TemporaryDirectory(prefix="pi-probe-") as tmp:
        state = Path(tmp)
        key, public = local_training.local_key(state)
        models = state / "models"
        models.mkdir()
        work = Path(tempfile.mkdtemp(prefix=".training-", dir=models))
        local_training.write_job(
            work,
            np.vstack([r[1] for r in rows]),
            np.array([r[0] for r in rows], dtype=np.int64),
            spec=spec.to_dict(),
            name=DEVICE,
            version=1,
            trees=args.trees,
            scale_floor=d.scale_floor,
            source="gateway:bootstrap: no model installed",
            key=str(key),
            devices=None,
        )
        t0 = time.perf_counter()
        import gatewayd.models.training  # noqa: F401  (scikit-learn: what the training child imports)

        import_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        local_training.main(work)
        train_s = time.perf_counter() - t0
        rss_train = rss_mb()
        store = ModelStore(models, [public])
        store.install(work / "bundle")
        found = store.current(DEVICE)
        assert found is not None
        manifest, folder = found
        scorer = Scorer(manifest, folder, threads=ModelsSection().threads)
        detector = Detector(DEVICE, scorer, rule_settings(d), DriftSettings(threshold=d.drift_threshold))
        print(
            f"training: {train_s:.2f} s ({args.trees} trees; importing the training code took {import_s:.2f} s);"
            f" peak RSS {rss_import:.1f} MB after import, {rss_train:.1f} MB after training",
            file=sys.stderr,
        )

        per_window: list[float] = []
        scoring: list[float] = []
        alarming = 0
        while k < len(ts_ms) and len(per_window) < args.windows:
            t0 = time.perf_counter()
            for end_ms, features in windows.add(int(ts_ms[k]), poll_names, values[k]):
                t1 = time.perf_counter()
                result = detector.window(end_ms, features)
                t2 = time.perf_counter()
                per_window.append(t2 - t0)
                scoring.append(t2 - t1)
                alarming += bool(result.step.alarming)
                t0 = t2
            k += 1
    rss_peak = rss_mb()
    if len(per_window) < args.windows:
        print(f"only {len(per_window)} windows closed in the data", file=sys.stderr)

    ms = 1000.0
    figures = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "train_s": round(train_s, 3),
        "import_training_s": round(import_s, 3),
        "score_p50_ms": round(percentile(per_window, 0.5) * ms, 4),
        "score_p99_ms": round(percentile(per_window, 0.99) * ms, 4),
        "rss_import_mb": round(rss_import, 1),
        "rss_train_mb": round(rss_train, 1),
        "rss_peak_mb": round(rss_peak, 1),
        "windows": len(per_window),
        "trees": args.trees,
        "minutes": args.minutes,
        "channels": args.channels,
    }
    print(
        f"scoring: {len(per_window)} windows, p50 {figures['score_p50_ms']:.3f} ms, p99 {figures['score_p99_ms']:.3f} ms"
        f" per window (Detector.window alone: p50 {percentile(scoring, 0.5) * ms:.3f} ms; first window"
        f" {per_window[0] * ms:.3f} ms); {alarming} alarming; peak RSS {rss_peak:.1f} MB",
        file=sys.stderr,
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
