"""Command line of gatewayd: a thin layer over the daemon, config and demo modules."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from gatewayd import __version__
from gatewayd.cli.parsers import add_command, add_config_option, command_texts
from gatewayd.config import Config, ConfigError, load_config, state_dir_problem

if TYPE_CHECKING:
    from gatewayd.store.database import Store

EXIT_CONFIG = 2


TEXTS = command_texts("gatewayd.cli")


GROUPS = ("model", "alert", "command", "evaluate", "probe")  # command groups with a module each


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatewayd", description="Edge anomaly-detection gateway daemon.")
    parser.add_argument("--version", action="version", version=f"gatewayd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = add_command(sub, "run", TEXTS)
    add_config_option(run)

    check = add_command(sub, "check-config", TEXTS)
    add_config_option(check)

    status = add_command(sub, "status", TEXTS)
    add_config_option(status)

    export = add_command(sub, "export", TEXTS)
    add_config_option(export)
    export.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="DEVICE/CHANNEL",
        help="a channel to export (repeatable; default: all)",
    )
    export.add_argument(
        "--from", dest="start", default="0", help="start, ISO 8601 (UTC if no zone) or ms (default: all)"
    )
    export.add_argument("--to", dest="end", default=str(2**62), help="end, exclusive (default: now and later)")
    export.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        default="csv",
        help="csv: a header and one row per reading; jsonl: one JSON object per line and reading, "
        "with the CSV's columns as keys (default: %(default)s)",
    )
    export.add_argument("--out", type=Path, help="file to write (default: standard output)")
    export.add_argument(
        "--mark-clock",
        action="store_true",
        help="add a column `clock`: `unsynced` for readings stamped before the gateway's clock was "
        "synchronised (their time may be off)",
    )

    demo = add_command(sub, "demo", TEXTS)
    demo.add_argument("--duration", type=float, help="seconds to run (default: 420, the bootstrap and two minutes)")
    demo.add_argument(
        "--bootstrap-minutes", type=float, help="data collected before the first models are trained (default: 5)"
    )
    demo.add_argument(
        "--nodes",
        type=int,
        default=3,
        choices=range(1, 17),
        metavar="1..16",
        help="virtual nodes to start (default: %(default)s)",
    )
    demo.add_argument("--interval", type=float, default=0.5, help="poll interval in seconds (default: %(default)s)")
    demo.add_argument(
        "--state-dir",
        type=Path,
        default=Path("var"),
        help="the demo's own folder (store, models, nodes' flash), cleared at the start of each run unless "
        "--keep; a folder the demo did not make is refused (default: %(default)s)",
    )
    demo.add_argument(
        "--keep",
        "--reuse",  # its first name: older commands keep working
        dest="keep",
        action="store_true",
        help="keep --state-dir as the last run left it and carry on from there (its store, models, open "
        "alerts) instead of clearing it",
    )
    demo.add_argument(
        "--progress", type=float, default=5.0, help="seconds between progress lines (default: %(default)s)"
    )
    demo.add_argument(
        "--dashboard-port",
        type=int,
        default=8080,
        help="the dashboard's port on 127.0.0.1, another if taken; 0: no dashboard (default: %(default)s)",
    )
    demo.add_argument(
        "--fault-after",
        type=float,
        metavar="S",
        help="the last pump's motor current jumps 20 A after S seconds: alerts to look at and label",
    )

    for name in GROUPS:
        importlib.import_module(f"gatewayd.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from gatewayd.cli.pipe import quiet_on_closed_pipe
    from gatewayd.cli.state_access import StateUnavailable

    args = build_parser().parse_args(argv)
    try:
        return quiet_on_closed_pipe(lambda: _dispatch(args))
    except StateUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "check-config":
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        problem = state_dir_problem(config, args.config.read_text(encoding="utf-8"), str(args.config))
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"{args.config}: ok ({len(config.devices)} devices)")
        return 0
    if args.command == "run":
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        _setup_logging(config.gateway.log_level)
        problem = state_dir_problem(config, args.config.read_text(encoding="utf-8"), str(args.config))
        if problem is not None:  # polling and alerting go on; the store is opened once it can be
            logging.getLogger("gatewayd").error("%s; running without a store until it can be written", problem)
        return asyncio.run(_run(config, args.config))
    if args.command in ("status", "export"):
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        from gatewayd.cli.state_access import open_store

        store = open_store(config, readonly=True)
        try:
            return _status(config, store) if args.command == "status" else _export(args, store)
        finally:
            store.close()
    if args.command in GROUPS:  # each group's module parses and runs its own subcommands
        return importlib.import_module(f"gatewayd.cli.{args.command}").run(args)
    if args.command == "demo":
        from gatewayd.demo.runner import run_demo
        from gatewayd.errors import GatewayError

        _setup_logging("warning")
        try:
            chosen = {"duration_s": args.duration, "bootstrap_minutes": args.bootstrap_minutes}
            return run_demo(
                **{k: v for k, v in chosen.items() if v is not None},
                nodes=args.nodes,
                state_dir=args.state_dir,
                interval_s=args.interval,
                progress_s=args.progress,
                dashboard=args.dashboard_port,
                fault_after_s=args.fault_after,
                keep=args.keep,
            )
        except GatewayError as exc:  # the nodes, the configuration, the state folder: said, no traceback
            print(f"error: {exc}", file=sys.stderr)
            return 1
    raise AssertionError(args.command)


def _status(config: Config, store: Store) -> int:
    import sqlite3

    from gatewayd.clock import iso
    from gatewayd.store import upload_state
    from gatewayd.store.reserve import Reserve

    db = store.path
    _print_running(config)
    try:
        usage = store.disk_usage()
        reserve = Reserve(config.state_path, 0).on_disk()
        total = usage.files + reserve
        print(
            f"store {db}: {total / 1e6:.1f} MB on disk of {config.store.disk_budget_mb:g} MB budget "
            f"(database {usage.database / 1e6:.1f} MB, {usage.used / 1e6:.1f} MB of it in use; WAL {usage.wal / 1e6:.1f} MB; "
            f"reserve {reserve / 1e6:.1f} MB), {store.reading_count()} readings, {store.alert_count()} alerts"
        )
        agent = upload_state.read(config.state_path)
        waiting = store.outbox_waiting(upload_state.outbox_cursors(agent))
        print(
            f"outbox: {sum(waiting.values())} waiting for upload ("
            + ", ".join(f"{source} {n}" for source, n in waiting.items())
            + ("" if agent is not None else "; no cloud agent has uploaded from this gateway")
            + ")"
        )
        for kind, (rows, readings) in sorted(store.evictions().items()):
            print(f"  evicted {kind}: {rows} rows, {readings} readings")
        configured = {d.name for d in config.devices}
        for device in sorted({d for _, d, _, _ in store.channels()} | configured):
            note = "" if device in configured else " (not in the configuration)"
            print(f"{device}{note}: {store.reading_count(device)} readings")
            for _, dev, channel, unit in store.channels():
                if dev != device:
                    continue
                newest = store.last_written(device, channel)
                minute = newest[0] // 60_000 * 60_000 if newest else None
                found = store.minute_summaries(device, channel, minute, minute + 60_000) if newest else []
                if newest and found:
                    m = found[0]
                    print(
                        f"  {channel:<14} last {newest[1]:.4g} {unit:<5} minute of {iso(m['minute_ms'])}: "
                        f"mean {m['mean']:.4g}, min {m['min']:.4g}, max {m['max']:.4g}, {m['count']} readings"
                    )
                elif newest:
                    print(f"  {channel:<14} last {newest[1]:.4g} {unit:<5} at {iso(newest[0])}")
                else:
                    print(f"  {channel:<14} no readings yet")
    except sqlite3.Error as exc:
        print(f"error: the store {db} cannot be read: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_running(config: Config) -> None:
    from gatewayd import daemon_status

    status = daemon_status.read(config.status_path)
    if status is None:
        print("daemon: no status (not running, or not yet)")
        return
    age = status.age_s()
    if age is None:
        print("daemon: not running since the last boot; at its last status:")
    elif status.stopped:
        print(f"daemon: stopped {age:.0f} s ago; at stop:")
    elif age > 10:
        print(f"daemon: not running (last status {age:.0f} s old)")
    w = status.writer
    print(
        f"daemon: {w.written} readings written, {w.queued} queued, {status.alerts} alerts raised"
        + (f" (status {age:.0f} s old)" if age is not None and age <= 10 else "")
    )
    store = status.store
    if store.state == "ok":
        print(
            f"  store: ok, {(store.disk_bytes or 0) / 1e6:.1f} MB on disk of {store.budget_bytes / 1e6:g} MB"
            + (f"; {store.faults} faults so far, the last one {store.last_outage_s or 0:.0f} s" if store.faults else "")
        )
    else:
        print(
            f"  store: DEGRADED ({store.state.replace('_', ' ')}): {store.last_error}; "
            f"{store.readings_dropped} readings dropped, {store.writes_waiting} alert writes waiting in memory"
        )
    clock = status.clock
    if not clock.synchronized or clock.steps:
        print(
            f"  clock: {'synchronised' if clock.synchronized else 'NOT synchronised (readings are marked)'}"
            + (f", stepped {clock.steps} times, last by {clock.last_step_s:+.0f} s" if clock.steps else "")
        )
    for name, d in sorted(status.devices.items()):
        error = f", last error: {d.last_error}" if d.state != "online" and d.last_error else ""
        print(f"  {name}: {d.state}, {d.polls} polls, {d.skipped_ticks} skipped{error}")
    if status.detection:
        det = status.detection
        models = daemon_status.describe_models(det["models"])
        print(
            f"  detection: {det.get('scored', 0)} windows scored, {det.get('incidents', 0)} incidents, "
            f"{det.get('dropped', 0)} polls dropped; "
            f"models: {models}"
        )
    if status.mqtt is not None:
        m = status.mqtt
        print(
            f"  mqtt: {'connected' if m['connected'] else 'disconnected'}, {m['published']} published, "
            f"{m['queued']} queued, {m['backlogged']} kept in the store, {m['dropped']} dropped"
        )


def _export(args: argparse.Namespace, store: Store) -> int:
    from gatewayd.store.export import export_readings, parse_time, what_the_store_holds

    try:
        start, end = parse_time(args.start), parse_time(args.end)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def export(out: TextIO) -> tuple[int, int]:
        return export_readings(store, out, args.channel, start, end, mark_clock=args.mark_clock, fmt=args.format)

    try:
        if args.out is None:
            rows, unsynced = export(sys.stdout)
        else:
            tmp = args.out.with_name(args.out.name + ".partial")
            with tmp.open("w", newline="") as f:
                rows, unsynced = export(f)
            tmp.replace(args.out)  # a file that exists is complete
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    print(f"{rows} readings exported", file=sys.stderr)
    if not rows:  # say where the readings are, so the next try can aim at them
        print(f"nothing in that range: {what_the_store_holds(store, args.channel)}", file=sys.stderr)
    if unsynced:
        print(
            f"{unsynced} of them were stamped before the gateway's clock was synchronised: their time may be off"
            + ("" if args.mark_clock else " (--mark-clock marks them)"),
            file=sys.stderr,
        )
    return 0


async def _run(config: Config, path: Path) -> int:
    """Run until SIGINT/SIGTERM; SIGHUP re-reads the configuration and restarts the pipeline
    with it (an invalid file is reported and the running configuration kept)."""
    from gatewayd import daemon, service

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reload = asyncio.Event()
    done = asyncio.Event()

    def terminate() -> None:
        done.set()
        stop.set()

    def hangup() -> None:
        reload.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, terminate)
    loop.add_signal_handler(signal.SIGHUP, hangup)
    while True:
        await daemon.run(config, stop)
        if done.is_set() or not reload.is_set():
            return 0
        reload.clear()
        stop.clear()
        service.notify("RELOADING=1")
        try:
            config = load_config(path)
            logging.getLogger("gatewayd").info("configuration reloaded from %s", path)
        except ConfigError as exc:
            logging.getLogger("gatewayd").error("configuration not reloaded, keeping the running one: %s", exc)


def _setup_logging(level: str) -> None:
    from gatewayd import service

    service.setup_logging(level)
