"""Scoring windows: the Isolation Forest as a TFLite graph beside scikit-learn's
`IsolationForest.score_samples` on the same trained forest, in the same run; and the whole
per-window path of the gateway (scaling, IF and autoencoder in the interpreter).

    .venv/bin/python bench/scoring.py [--trees 100] [--features 48] [--runs 2000] [--threads 1]
    .venv/bin/python bench/scoring.py --csv DIR/anomaly-free.csv   # features from real data

Prints single-window latency (median, p99) and batch throughput of both, their ratios, the
IF+AE p99 per window, and the model file sizes; last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sklearn.ensemble import IsolationForest  # noqa: E402

from gatewayd.store import series  # noqa: E402
from gatewayd.detection.features import FeatureSpec, sliding_windows  # noqa: E402
from gatewayd.models.bundle import generate_keypair, load_private_key, load_public_key, verify, write_bundle  # noqa: E402
from gatewayd.models.iforest import compile_forest  # noqa: E402
from gatewayd.models.runtime import TfliteModel  # noqa: E402
from gatewayd.models.scorer import Scorer  # noqa: E402
from gatewayd.models.training import train_bundle  # noqa: E402


def timings(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def windows(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, FeatureSpec]:
    if args.csv:
        ts, values, names = series.read_csv(args.csv)
        spec = FeatureSpec(tuple(names), sample_period_s=series.sample_period_s(ts))
        ends, x = sliding_windows(spec, ts, values)
        return ends, x, spec
    rng = np.random.default_rng(0)
    channels = max(1, args.features // 6)
    spec = FeatureSpec(tuple(f"ch{i}" for i in range(channels)))
    base = rng.normal(size=(4000, 3))
    x = base @ rng.normal(size=(3, len(spec.names))) + rng.normal(0, 0.1, (4000, len(spec.names)))
    return np.arange(len(x), dtype=np.int64) * 5000, x, spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--features", type=int, default=48, help="synthetic features (6 per channel)")
    parser.add_argument("--csv", type=Path, help="train on windows of this CSV instead (time, then channels)")
    parser.add_argument("--runs", type=int, default=2000, help="single-window calls timed per scorer")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    ends, x, spec = windows(args)
    print(f"{len(x)} windows x {x.shape[1]} features, {args.trees} trees", file=sys.stderr)
    forest = IsolationForest(n_estimators=args.trees, random_state=0).fit(x)
    graph = TfliteModel(compile_forest(forest), threads=args.threads)
    rows = x.astype(np.float32)
    one = rows[:1]
    worst = float(np.max(np.abs(graph(rows)["anomaly_score"] + forest.score_samples(rows))))

    sk_runs = max(50, args.runs // 10)  # scikit-learn is slow per call; fewer runs give the same median
    sk_single = timings(lambda: forest.score_samples(one), sk_runs)
    tf_single = timings(lambda: graph(one), args.runs)
    batch = np.tile(rows, (-(-10_000 // len(rows)), 1))[:10_000]
    graph(batch)  # resize once, outside the timing
    sk_batch = min(timings(lambda: forest.score_samples(batch), 3))
    tf_batch = min(timings(lambda: graph(batch), 3))

    with tempfile.TemporaryDirectory(prefix="scoring-bench-") as tmp:
        folder = Path(tmp)
        generate_keypair(folder / "k.pem", folder / "k.pub")
        trained = train_bundle(x, ends, spec, name="bench", version=1, source="bench", trees=args.trees)
        bundle = write_bundle(folder / "bundle", trained.manifest, trained.files, load_private_key(folder / "k.pem"))
        scorer = Scorer(verify(bundle, [load_public_key(folder / "k.pub")]), bundle, threads=args.threads)
        window = x[0]
        scorer.score(window)
        both = timings(lambda: scorer.score(window), args.runs)
        sizes = {name: len(data) for name, data in trained.files.items()}

    ms = 1000.0
    figures = {
        "sklearn_single_median_ms": round(statistics.median(sk_single) * ms, 4),
        "sklearn_single_p99_ms": round(p(sk_single, 0.99) * ms, 4),
        "tflite_single_median_ms": round(statistics.median(tf_single) * ms, 4),
        "tflite_single_p99_ms": round(p(tf_single, 0.99) * ms, 4),
        "speedup_single_window": round(statistics.median(sk_single) / statistics.median(tf_single), 1),
        "sklearn_batch_windows_per_s": round(len(batch) / sk_batch),
        "tflite_batch_windows_per_s": round(len(batch) / tf_batch),
        "speedup_batch": round(sk_batch / tf_batch, 2),
        "p50_ms_if_ae": round(statistics.median(both) * ms, 4),
        "p99_ms_if_ae": round(p(both, 0.99) * ms, 4),
        "iforest_bytes": sizes["iforest.tflite"],
        "autoencoder_bytes": sizes["autoencoder.tflite"],
        "max_abs_score_difference": worst,
        "trees": args.trees,
        "features": int(x.shape[1]),
    }
    print(
        f"single window : TFLite median {figures['tflite_single_median_ms']:.3f} ms (p99 {figures['tflite_single_p99_ms']:.3f}),"
        f" scikit-learn {figures['sklearn_single_median_ms']:.3f} ms (p99 {figures['sklearn_single_p99_ms']:.3f});"
        f" {figures['speedup_single_window']}x"
    )
    print(
        f"batch of {len(batch)}: TFLite {figures['tflite_batch_windows_per_s']:,} windows/s, "
        f"scikit-learn {figures['sklearn_batch_windows_per_s']:,}; {figures['speedup_batch']}x"
    )
    print(
        f"IF + AE per window (scaling included): p50 {figures['p50_ms_if_ae']:.3f} ms, p99 {figures['p99_ms_if_ae']:.3f} ms"
    )
    print(
        f"files: iforest {sizes['iforest.tflite'] / 1024:.0f} KiB, autoencoder {sizes['autoencoder.tflite'] / 1024:.0f} KiB;"
        f" largest score difference to scikit-learn {worst:.1e}"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
