"""`gatewayd alert ...`: list alerts, acknowledge them, label them for the feedback loop."""

from __future__ import annotations

import argparse
import sys

from gatewayd.alerts.alert import KINDS
from gatewayd.cli.parsers import add_command, add_config_option, command_texts
from gatewayd.cli.state_access import open_store
from gatewayd.config import Config, ConfigError, load_config
from gatewayd.store.database import ALERT_STATES, Store

TEXTS = command_texts("gatewayd.cli")


def add_parser(sub: argparse._SubParsersAction) -> None:
    alert = add_command(sub, "alert", TEXTS)
    asub = alert.add_subparsers(dest="alert_command", required=True, metavar="COMMAND")
    lst = add_command(asub, "alert list", TEXTS)
    lst.add_argument("--device", help="only this device's alerts (a known device: configured or in the store)")
    lst.add_argument(
        "--kind",
        action="append",
        choices=KINDS,
        help="only alerts of this kind (repeatable: any of them): edge from the node's own checks, model, "
        "drift, device offline, operator-reported missed anomalies",
    )
    lst.add_argument(
        "--state",
        action="append",
        choices=tuple(ALERT_STATES),
        help="only alerts in this state (repeatable: in all of them, e.g. open and unacknowledged)",
    )
    lst.add_argument("--limit", type=int, default=20, help="newest first, at most this many (default: %(default)s)")
    ack = add_command(asub, "alert ack", TEXTS)
    ack.add_argument("id")
    label = add_command(asub, "alert label", TEXTS)
    label.add_argument("id")
    label.add_argument("verdict", choices=("true", "false"))
    missed = add_command(asub, "alert missed", TEXTS)
    missed.add_argument("device")
    missed.add_argument("--at", required=True, help="when, ISO 8601 (UTC if no zone) or ms")
    for p in (lst, ack, label, missed):
        add_config_option(p)
    for p in (ack, label, missed):
        p.add_argument("--operator", help="who says so (stored with the label)")


def run(args: argparse.Namespace) -> int:
    from gatewayd.alerts import commands

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = open_store(config, readonly=args.alert_command == "list")
    try:
        if args.alert_command == "list":
            return _list(args, config, store)
        if args.alert_command == "missed":  # validated and applied as the MQTT command is
            missed = commands.validate_any(
                {"command": "missed", "device": args.device, "at": args.at, "operator": args.operator},
                config.gateway.name,
                [d.name for d in config.devices],
            )
            print(commands.apply(store, missed))
            return 0
        command = commands.Command(
            command="ack" if args.alert_command == "ack" else "label",
            alert=args.id,
            label=getattr(args, "verdict", None),
            operator=args.operator,
        )
        print(commands.apply(store, command))
        return 0
    except (commands.CommandError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _list(args: argparse.Namespace, config: Config, store: Store) -> int:
    from gatewayd.clock import iso

    if args.device is not None:
        known = sorted(
            {d.name for d in config.devices} | {d for _, d, _, _ in store.channels()} | set(store.alert_devices())
        )
        if args.device not in known:  # a typo must not look like a device without alerts
            print(f"error: no device {args.device!r}; known: {', '.join(known) or 'none'}", file=sys.stderr)
            return 2
    for a in store.alerts(args.limit, args.device, kinds=args.kind, states=args.state or ()):
        state = "closed " + iso(a["closed_ms"]) if a["closed_ms"] else "open"
        extra = ", ".join(f for f, _ in a["detail"].get("top_features", [])[:3])
        print(
            f"{a['id']}  {a['severity']:<8} {a['kind']:<6} {iso(a['opened_ms'])}  {state}"
            f"  ack={'yes' if a['acknowledged_ms'] else 'no'}  label={a['label'] or '-'}"
            f"  channels={','.join(a['channels']) or '-'}" + (f"  features={extra}" if extra else "")
        )
    return 0
