"""`gatewayd evaluate skab DIR --out OUT`: the gateway's detection path over SKAB-format data."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from gatewayd.cli.parsers import add_command, command_texts
from gatewayd.detection.rules import SCORE_NAMES

TEXTS = command_texts("gatewayd.cli")


def add_parser(sub: argparse._SubParsersAction) -> None:
    evaluate = add_command(sub, "evaluate", TEXTS)
    esub = evaluate.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    skab = add_command(esub, "evaluate skab", TEXTS)
    skab.add_argument("data", type=Path, help="folder with SKAB-format CSV files")
    skab.add_argument("--out", type=Path, required=True, help="folder for the results files")
    skab.add_argument("--train-rows", type=int, default=400, help="rows trained on per file (default: %(default)s)")
    skab.add_argument("--window-s", type=float, help="window length (default: 10 sample periods of the file)")
    skab.add_argument("--false-alarms-per-day", type=float, help="false-alarm budget (default: the detection default)")
    skab.add_argument(
        "--scores", nargs="+", choices=SCORE_NAMES, help="deciding scores (default: the detection default)"
    )
    skab.add_argument(
        "--baseline-follow-windows",
        type=float,
        help="time constant of the baseline following normal windows, in windows; 0 for none "
        "(default: the detection default)",
    )
    skab.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from gatewayd.detection.evaluate import LEADERBOARD, EvalSettings, evaluate, metrics
    from gatewayd.detection.rules import RuleSettings

    chosen = {
        "false_alarms_per_day": args.false_alarms_per_day,
        "scores": tuple(args.scores) if args.scores else None,
        "follow_windows": args.baseline_follow_windows,
    }
    try:
        rules = RuleSettings(**{k: v for k, v in chosen.items() if v is not None})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = EvalSettings(train_rows=args.train_rows, window_s=args.window_s, rules=rules, seed=args.seed)
    if not args.data.is_dir():
        print(f"error: {args.data} is not a folder", file=sys.stderr)
        return 2
    try:
        results, pooled = evaluate(
            args.data, args.out, settings, progress=lambda t: print(t, file=sys.stderr, flush=True)
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    latencies = sorted(x * 1000 for r in results for x in r.latencies_s)
    p50 = statistics.median(latencies)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    rows = sum(r.rows for r in results)
    windows = f"{settings.window_s:g} s" if settings.window_s else "10 samples"
    print(
        f"\n{len(results)} files, {rows} rows decided; budget {rules.false_alarms_per_day:g} false alarms a day on "
        f"{'+'.join(rules.scores)}, baseline follow {rules.follow_windows:g} windows, windows {windows}, "
        f"stats {','.join(settings.stats)}, rule {rules.combine}, open after {rules.open_after}, close after {rules.close_after}"
    )

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    print(f"{'detector':<42} {'F1':>6} {'FAR':>7} {'MAR':>7}")
    print(f"{'this gateway (these files)':<42} {pooled['f1']:6.3f} {pct(pooled['far']):>7} {pct(pooled['mar']):>7}")
    for name, f1, far, mar in LEADERBOARD:
        print(f"{name + ' (published, 34 files)':<42} {f1:6.3f} {pct(far):>7} {pct(mar):>7}")
    print("Conv-AE (published) on valve1 only: F1 0.755, FAR 14.4%")
    per_file = [metrics(r.tp, r.fp, r.tn, r.fn) for r in results]
    worst_f1 = min(per_file, key=lambda m: m["f1"])["f1"]
    worst_far = max(m["far"] for m in per_file)
    print(f"worst file: F1 {worst_f1:.3f}; highest FAR of a file {worst_far:.1%}")
    print(
        f"latency per window (features, the three models in the interpreter, rules): p50 {p50:.3f} ms, p99 {p99:.3f} ms"
    )
    print(
        json.dumps(
            {
                "f1": round(pooled["f1"], 4),
                "far": round(pooled["far"], 4),
                "mar": round(pooled["mar"], 4),
                "files": len(results),
                "rows": rows,
                "worst_file_f1": round(worst_f1, 4),
                "worst_file_far": round(worst_far, 4),
                "window_p50_ms": round(p50, 4),
                "window_p99_ms": round(p99, 4),
            }
        )
    )
    return 0
