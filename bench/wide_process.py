"""Detection on a wide, slow process: what the defaults find where the validation sets have 4-8
channels sampled every second. A synthetic plant of 52 channels sampled every 3 minutes (the
shape of a chemical process's historian data), driven by 6 slow latent factors (time constant
about 30 minutes) plus each channel's own noise; 400 rows (20 hours) to train on, as
`gatewayd evaluate skab` takes them, then 960 rows (48 hours) with a fault from row 160 on:

- disturbance: one factor's mean steps by 1.5 of its spread (a feed composition change);
- variation: one factor's noise triples (a loop that starts to hunt);
- drift: one factor's mean ramps (fouling, a catalyst that ages);
- bias, sensor-drift, sticky: one sensor offset by 2 of its spreads, ramping by 4, frozen;
- correlation: one channel's deviations reversed (a valve that acts the wrong way).

Every file is scored through the validation bench's path (bench/detection_validation.py:
train_bundle, a signed bundle, the TFLite graphs, the detector's ratios, baseline and rules) with
the defaults, and beside them with a budget of 1 false alarm a day and with `pca_t2` deciding
beside `pca_q`, as references from the same run. Reported:
the FAR on normal rows (those before the fault and a file with none) and each kind's recall.
Nothing here is used to choose a setting; it shows where the defaults stand on data of this shape.

    .venv/bin/python bench/wide_process.py [--seeds 0 1 2]

Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detection_validation as dv

from gatewayd.detection import rules as rules_module
from gatewayd.models import scaling
from gatewayd.models.bundle import generate_keypair

CHANNELS, FACTORS = 52, 6
TRAIN_ROWS, TEST_ROWS, FAULT_ROW = 400, 960, 160
PERIOD_MS = 180_000
KINDS = ("disturbance", "variation", "drift", "bias", "sensor-drift", "sticky", "correlation")


def process(rng: np.random.Generator, kind: str | None) -> np.ndarray:
    """One run of the plant (rows, CHANNELS); with `kind`, its fault from TRAIN_ROWS + FAULT_ROW."""
    n, start = TRAIN_ROWS + TEST_ROWS, TRAIN_ROWS + FAULT_ROW
    loadings = rng.normal(0, 1, (CHANNELS, FACTORS)) * (rng.random((CHANNELS, FACTORS)) < 0.4)
    spread, level = 10 ** rng.uniform(-1, 2, CHANNELS), 10 ** rng.uniform(0, 3, CHANNELS)
    shocks, noise = rng.normal(0, 1, (n, FACTORS)), rng.normal(0, 1, (n, CHANNELS))
    f, e = np.zeros((n, FACTORS)), np.zeros((n, CHANNELS))
    gain, mean = np.ones(FACTORS), np.zeros(FACTORS)
    for t in range(1, n):
        if kind and t >= start:
            if kind == "disturbance":
                mean[0] = 1.5
            elif kind == "variation":
                gain[1] = 3.0
            elif kind == "drift":
                mean[2] = 0.01 * (t - start)
        f[t] = 0.9 * f[t - 1] + 0.1 * mean + np.sqrt(0.19) * gain * shocks[t]
        e[t] = 0.5 * e[t - 1] + np.sqrt(0.75) * noise[t]
    x = f @ loadings.T + 0.5 * e
    sd = x[:start].std(axis=0)
    if kind == "bias":
        x[start:, 7] += 2.0 * sd[7]
    elif kind == "sensor-drift":
        x[start:, 11] += np.linspace(0.0, 4.0 * sd[11], n - start)
    elif kind == "sticky":
        x[start:, 5] = x[start, 5]
    elif kind == "correlation":
        x[start:, 3] = 2 * x[:start, 3].mean() - x[start:, 3]
    return level + x * spread / x[:TRAIN_ROWS].std(axis=0).clip(1e-9)


def groups(seeds: list[int]) -> list[dv.Group]:
    ts = 1_700_000_000_000 + np.arange(TRAIN_ROWS + TEST_ROWS, dtype=np.int64) * PERIOD_MS
    out = []
    for seed in seeds:
        files = []
        for kind in (None, *KINDS):
            values = process(np.random.default_rng([7, seed]), kind)  # the same plant in every file of a seed
            labels = np.zeros(len(ts), dtype=int)
            if kind:
                labels[TRAIN_ROWS + FAULT_ROW :] = 1
            files.append(dv.File(f"wide#{seed}:{kind or 'none'}", values, labels, kind or dv.NOTHING))
        names = tuple(f"c{i}" for i in range(CHANNELS))
        out.append(dv.Group(f"wide#{seed}", "wide", ts, names, TRAIN_ROWS, files))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="plants to simulate")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    defaults = (
        scaling.SCALE_FLOOR,
        rules_module.DEFAULT_BUDGET,
        tuple(rules_module.DEFAULT_SCORES),
        rules_module.DEFAULT_FOLLOW_WINDOWS,
    )
    looser = (defaults[0], 1.0, *defaults[2:])
    both_pca = (defaults[0], defaults[1], ("pca_t2", "pca_q"), defaults[3])
    dv.CONFIGS[:] = [defaults, looser, both_pca]
    plants = groups(args.seeds)
    for g in plants:
        g.prepare()
    decisions: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="wide-process-") as tmp:
        keys = (Path(tmp) / "k.pem", Path(tmp) / "k.pub")
        generate_keypair(*keys)
        jobs = [(gi, defaults[0], 0) for gi in range(len(plants))]
        with multiprocessing.Pool(min(len(jobs), 2), initializer=dv._init, initargs=(plants, keys)) as pool:
            for _, _, _, _, out in pool.imap_unordered(dv.run_job, jobs):
                decisions.update(out)
    figures: dict[str, dict] = {}
    for ci, name in ((0, "defaults"), (1, "budget_1_per_day"), (2, "pca_t2_and_pca_q")):
        normal, per_kind = [], {k: [] for k in KINDS}
        for g in plants:
            for f in g.files:
                d = decisions[f.name][ci].astype(bool)
                normal.append(d[:FAULT_ROW] if f.kind != dv.NOTHING else d)
                if f.kind != dv.NOTHING:
                    per_kind[f.kind].append(d[FAULT_ROW:])
        counts = sum(dv.counts(decisions[f.name][ci], f.labels[TRAIN_ROWS:]) for g in plants for f in g.files)
        m = dv.vmetrics(counts)
        figures[name] = {
            "f1": round(float(m["f1"]), 4),
            "far_normal_rows": round(float(np.mean(np.concatenate(normal))), 4),
            "recall": {k: round(float(np.mean(np.concatenate(v))), 3) for k, v in per_kind.items()},
        }
    print(
        f"wide slow process: {CHANNELS} channels every {PERIOD_MS // 60000} min, {len(plants)} plants, trained on "
        f"{TRAIN_ROWS} rows, {len(KINDS)} faults each; windows of {dv.WINDOW_SAMPLES} samples"
    )
    print(f"{'':18s} {'F1':>6s} {'FAR':>6s}  " + " ".join(f"{k:>12s}" for k in KINDS))
    for name, fig in figures.items():
        print(
            f"{name:18s} {fig['f1']:6.3f} {fig['far_normal_rows']:6.1%}  "
            + " ".join(f"{fig['recall'][k]:12.0%}" for k in KINDS)
        )
    print("(recall: share of the fault's rows in an incident; FAR: normal rows in an incident)")
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
