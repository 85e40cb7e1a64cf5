"""NAB scoring rules and the edge NAB harness, on small series made here."""

import csv
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import edge_nab  # noqa: E402
from nab_score import MAX_TP, FileSeries, scaled_sigmoid, score_corpus  # noqa: E402

STANDARD = {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}


def series(scores, window=(600, 700)):
    stamps = [f"2020-01-01 {i // 60:02d}:{i % 60:02d}:00" for i in range(len(scores))]
    return FileSeries("x/y.csv", stamps, scores, [(stamps[window[0]] + ".000000", stamps[window[1]])])


def test_perfect_null_early_late_and_false_positives():
    n = 1000
    null = score_corpus([series([0.0] * n)], STANDARD)
    assert null.score == pytest.approx(0.0)
    perfect = [0.0] * n
    perfect[600] = 1.0
    assert score_corpus([series(perfect)], STANDARD).score == pytest.approx(100.0)
    late = [0.0] * n
    late[690] = 1.0
    late_score = score_corpus([series(late)], STANDARD).score
    assert late_score == pytest.approx(100 * (1 + scaled_sigmoid(-11 / 101) / MAX_TP) / 2)
    assert late_score < 70
    noisy = list(perfect)
    noisy[300] = 1.0  # a false positive before the window
    result = score_corpus([series(noisy)], STANDARD)
    assert result.false_positives == 1
    assert result.score == pytest.approx(100 * (1 - 0.11 * 0.9999993 + 1) / 2, abs=0.01)


def test_probationary_detections_are_ignored():
    scores = [0.0] * 1000
    scores[10] = 1.0  # inside the first 15%
    assert score_corpus([series(scores)], STANDARD).false_positives == 0


def test_harness_writes_nab_results_and_scores(tmp_path, capsys):
    data = tmp_path / "nab"
    (data / "synthetic").mkdir(parents=True)
    rng = np.random.default_rng(1)
    values = 10 + rng.normal(0, 1, 2000)
    values[1500:1510] += 15
    stamps = [f"2020-01-{1 + i // 1440:02d} {(i // 60) % 24:02d}:{i % 60:02d}:00" for i in range(2000)]
    with (data / "synthetic" / "spike.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value"])
        w.writerows(zip(stamps, values))
    (data / "combined_windows.json").write_text(
        json.dumps({"synthetic/spike.csv": [[stamps[1450] + ".000000", stamps[1550] + ".000000"]]})
    )
    (data / "profiles.json").write_text(json.dumps({"standard": {"CostMatrix": STANDARD}}))
    out = tmp_path / "results"
    assert edge_nab.main(["--data", str(data), "--out", str(out)]) == 0
    with (out / "synthetic" / "edge_spike.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2000 and set(rows[0]) == {"timestamp", "value", "anomaly_score"}
    scores = [float(r["anomaly_score"]) for r in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert max(range(2000), key=lambda i: scores[i]) in range(1500, 1510)
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["edge_standard"] > 90


def test_edge_scores_are_the_nodes_detections_with_its_off_delay():
    rng = np.random.default_rng(2)
    values = 10 + rng.normal(0, 1, 3000)
    settings = edge_nab.EdgeSettings()
    centre, scale, kwargs = edge_nab.commission(values, settings)  # from the first 450 samples only
    high = centre + kwargs["high"] / scale
    assert 13 < high < 16  # the probationary range plus a quarter of it
    values[2000:2300] = high + 0.5 + rng.normal(0, 1, 300)  # hovers about the high bound
    crossings = sum(1 for a, b in itertools.pairwise(values[1999:2300]) if a <= high < b)
    assert crossings > 20
    held = edge_nab.edge_scores(values, settings)
    first_above = next(i for i in range(2000, 2300) if values[i] > high)
    assert set(held) <= {0.0, 1.0} and sum(held[2000:2300]) == 1 and held[first_above] == 1.0
    chattering = edge_nab.edge_scores(values, edge_nab.replace(settings, clear_after=1))
    assert sum(chattering[2000:2300]) > 20


def test_commissioning_turns_stuck_off_for_a_signal_flat_in_normal_operation():
    rng = np.random.default_rng(3)
    noisy = 10 + rng.normal(0, 1, 3000)
    noisy[2000:2200] = 10.0  # flat: a frozen sensor
    settings = edge_nab.EdgeSettings(checks=frozenset({"stuck"}))
    assert edge_nab.commission(noisy, settings)[2]["severities"][1] == edge_nab.det.SEVERITY_WARNING
    scores = edge_nab.edge_scores(noisy, settings)
    assert sum(scores) == 1 and scores.index(1.0) == 2000 + 64  # once the 64 samples before it are one value
    square = np.repeat([0.0, 1.0] * 15, 100)  # flat for 100 samples at a time, normally
    assert edge_nab.commission(square, settings)[2]["severities"][1] == edge_nab.det.SEVERITY_OFF
    assert sum(edge_nab.edge_scores(square, settings)) == 0


def test_bad_options_are_refused(tmp_path, capsys):
    for options in (["--checks", "bounds,colour"], ["--clear-after", "0"], ["--horizon", "256"], ["--rate-limit", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            edge_nab.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), *options])
        assert exit_info.value.code == 2
    assert "--clear-after must be 1..10000" in capsys.readouterr().err


def test_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    assert edge_nab.main(["--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "combined_windows.json" in capsys.readouterr().err
