"""SKAB evaluation through the gateway's own path: per file, train a bundle on the first rows,
then stream the rest in time order, scoring each window as it closes with the TFLite models
through the interpreter and stepping the alert rules; each row's decision uses data up to
that row only.

Metrics, pooled over all rows of all files (SKAB's definitions): F1 = TP / (TP + (FP + FN) / 2),
FAR = FP / (FP + TN), MAR = FN / (FN + TP).
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatewayd.detection.features import FeatureSpec, window_features
from gatewayd.models.bundle import generate_keypair, load_private_key, load_public_key, verify, write_bundle
from gatewayd.models.scaling import SCALE_FLOOR
from gatewayd.models.scorer import Scorer
from gatewayd.models.training import train_bundle
from gatewayd.store import series

from .detector import Detector, DriftSettings
from .rules import RuleSettings

# The published SKAB outlier-detection leaderboard (all 34 files): F1, FAR, MAR (None: not quoted here).
LEADERBOARD: list[tuple[str, float, float | None, float | None]] = [
    ("Conv-AE", 0.78, 0.136, 0.280),
    ("MSET", 0.78, 0.397, None),
    ("T-squared+Q (PCA)", 0.76, 0.266, None),
    ("LSTM-AE", 0.74, None, None),
    ("Vanilla AE", 0.39, None, None),
    ("Isolation Forest", 0.29, 0.026, 0.829),
]
LABEL_COLUMNS = ("anomaly", "changepoint")
WINDOW_SAMPLES = 10  # the default window, in samples: 10 s on SKAB, whatever the period of other data


@dataclass(frozen=True)
class EvalSettings:
    train_rows: int = 400
    window_s: float | None = None  # None: WINDOW_SAMPLES sample periods of the file
    stats: tuple[str, ...] = ("mean",)
    trees: int = 100
    scale_floor: float = SCALE_FLOOR
    rules: RuleSettings = RuleSettings()
    seed: int = 0

    def window_for(self, period_s: float) -> float:
        return self.window_s if self.window_s is not None else WINDOW_SAMPLES * period_s


@dataclass
class FileResult:
    path: Path
    rows: int
    tp: int
    fp: int
    tn: int
    fn: int
    latencies_s: list[float]  # per window: features, both models, the rules


def metrics(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    return {
        "f1": tp / (tp + (fp + fn) / 2) if tp + fp + fn else 1.0,
        "far": fp / (fp + tn) if fp + tn else 0.0,
        "mar": fn / (fn + tp) if fn + tp else 0.0,
    }


def read_skab(path: Path) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, list[str]]:
    """(ts_ms, sensor values, sensor names, anomaly labels, datetime texts) of one SKAB file."""
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f, delimiter=";"))
    sensors = [h for h in header[1:] if h not in LABEL_COLUMNS]
    ts, values, _ = series.read_csv(path, sensors)
    _, labels, _ = series.read_csv(path, ["anomaly"])
    with open(path, newline="", encoding="utf-8") as f:
        stamps = [row[0] for row in csv.reader(f, delimiter=";")][1:]
    return ts, values, sensors, labels[:, 0].astype(int), stamps


def evaluate_file(path: Path, out: Path, settings: EvalSettings, workdir: Path) -> FileResult:
    ts, values, sensors, labels, stamps = read_skab(path)
    n_train = settings.train_rows
    period = series.sample_period_s(ts)
    window_s = settings.window_for(period)
    window_ms = int(window_s * 1000)
    spec = FeatureSpec(tuple(sensors), window_s=window_s, hop_s=period, stats=settings.stats, sample_period_s=period)
    # Training windows: one ending at every training row (hop = one row), rows 0..n_train-1 only.
    train_ends, train_x = [], []
    for end in range(n_train):
        lo = int(np.searchsorted(ts, ts[end] - window_ms, side="right"))
        if end + 1 - lo >= spec.min_fill * window_s / period:
            train_ends.append(ts[end])
            train_x.append(window_features(spec, ts[lo : end + 1], values[lo : end + 1]))
    trained = train_bundle(
        np.array(train_x),
        np.array(train_ends),
        spec,
        name="skab",
        version=1,
        source=f"skab:{path.name}",
        trees=settings.trees,
        scale_floor=settings.scale_floor,
        seed=settings.seed,
    )
    bundle = write_bundle(
        workdir / f"bundle-{path.parent.name}-{path.stem}",
        trained.manifest,
        trained.files,
        load_private_key(workdir / "k.pem"),
    )
    scorer = Scorer(verify(bundle, [load_public_key(workdir / "k.pub")]), bundle)
    detector = Detector(path.stem, scorer, settings.rules, DriftSettings(enabled=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    tp = fp = tn = fn = 0
    latencies = []
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["datetime", "anomaly_score", "anomaly"])
        for row in range(n_train, len(ts)):
            t0 = time.perf_counter()
            lo = int(np.searchsorted(ts, ts[row] - window_ms, side="right"))
            result = detector.window(int(ts[row]), window_features(spec, ts[lo : row + 1], values[lo : row + 1]))
            latencies.append(time.perf_counter() - t0)
            decision = int(result.step.incident_open or result.step.closed is not None and result.step.alarming)
            writer.writerow([stamps[row], f"{result.step.ratio:.6g}", decision])
            truth = labels[row]
            tp += decision and truth
            fp += decision and not truth
            tn += not decision and not truth
            fn += not decision and truth
    return FileResult(path, len(ts) - n_train, tp, fp, tn, fn, latencies)


def skab_files(root: Path) -> list[Path]:
    return sorted(
        (p for p in root.rglob("*.csv") if "anomaly-free" not in p.parts),
        key=lambda p: (p.parent.name, int(p.stem) if p.stem.isdigit() else p.stem),
    )


def evaluate(
    root: Path, out: Path, settings: EvalSettings = EvalSettings(), progress: Callable[[str], None] = lambda _: None
) -> tuple[list[FileResult], dict[str, float]]:
    files = skab_files(root)
    if not files:
        raise FileNotFoundError(f"no SKAB CSV files under {root}")
    results = []
    with tempfile.TemporaryDirectory(prefix="skab-eval-") as tmp:
        workdir = Path(tmp)
        generate_keypair(workdir / "k.pem", workdir / "k.pub")
        for i, path in enumerate(files, start=1):
            target = out / path.relative_to(root)
            r = evaluate_file(path, target, settings, workdir)
            m = metrics(r.tp, r.fp, r.tn, r.fn)
            progress(
                f"[{i}/{len(files)}] {path.relative_to(root)}: F1 {m['f1']:.3f}, FAR {m['far']:.1%}, MAR {m['mar']:.1%}"
            )
            results.append(r)
    pooled = metrics(
        sum(r.tp for r in results), sum(r.fp for r in results), sum(r.tn for r in results), sum(r.fn for r in results)
    )
    return results, pooled
