"""`gatewayd evaluate skab` on small SKAB-format files: results files as specified, the
anomaly found, metrics as SKAB defines them, and causal decisions."""

import csv
import json
import math
from datetime import datetime, timedelta

import numpy as np

from gatewayd.cli.main import main
from gatewayd.detection.evaluate import metrics


def write_skab(path, rows=700, anomaly=(520, 600), seed=0, bump_after=None):
    rng = np.random.default_rng(seed)
    t0 = datetime(2020, 3, 9, 10, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["datetime", "Pressure", "Flow", "Current", "anomaly", "changepoint"])
        for i in range(rows):
            p = 1.0 + 0.1 * math.sin(i / 30) + rng.normal(0, 0.01)
            flow = 30 * p + rng.normal(0, 0.1)
            current = 2.0 + rng.normal(0, 0.02)
            bad = anomaly[0] <= i < anomaly[1]
            if bad:
                flow -= 15.0  # a valve closing: flow drops by half while pressure does not
            if bump_after is not None and i >= bump_after:
                current += 50.0
            w.writerow(
                [
                    (t0 + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S"),
                    f"{p:.5f}",
                    f"{flow:.4f}",
                    f"{current:.4f}",
                    f"{float(bad)}",
                    f"{float(i == anomaly[0])}",
                ]
            )


def read_results(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_evaluate_skab_files(tmp_path, capsys):
    data = tmp_path / "skab"
    write_skab(data / "valve1" / "0.csv", seed=1)
    write_skab(data / "valve1" / "1.csv", seed=2, anomaly=(450, 560))
    write_skab(data / "anomaly-free" / "anomaly-free.csv", anomaly=(0, 0))
    out = tmp_path / "out"
    assert main(["evaluate", "skab", str(data), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "[2/2] valve1/1.csv" in captured.err  # progress, anomaly-free skipped
    figures = json.loads(captured.out.strip().splitlines()[-1])
    assert figures["files"] == 2 and figures["rows"] == 2 * 300
    assert figures["f1"] > 0.8 and figures["far"] < 0.1
    assert "Conv-AE" in captured.out and "latency per window" in captured.out
    rows = read_results(out / "valve1" / "0.csv")
    assert list(rows[0]) == ["datetime", "anomaly_score", "anomaly"] and len(rows) == 300
    assert rows[0]["datetime"] == "2020-03-09 10:06:40"  # the first row after the 400 trained on
    flagged = [i + 400 for i, r in enumerate(rows) if r["anomaly"] == "1"]
    assert flagged and 520 <= flagged[0] < 535 and all(500 <= i < 620 for i in flagged)


def test_decisions_are_causal(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    write_skab(a / "valve1" / "0.csv", seed=3)
    write_skab(b / "valve1" / "0.csv", seed=3, bump_after=650)  # the same file, changed from row 650 on
    for data, out in ((a, tmp_path / "out-a"), (b, tmp_path / "out-b")):
        assert main(["evaluate", "skab", str(data), "--out", str(out)]) == 0
    first, second = (
        read_results(tmp_path / "out-a" / "valve1" / "0.csv"),
        read_results(tmp_path / "out-b" / "valve1" / "0.csv"),
    )
    assert first[:250] == second[:250]  # rows 400..649: unchanged by what came later
    assert first[260:] != second[260:]


def test_skab_metric_definitions():
    m = metrics(tp=30, fp=10, tn=50, fn=10)
    assert m["f1"] == 30 / (30 + 10) and m["far"] == 10 / 60 and m["mar"] == 10 / 40
