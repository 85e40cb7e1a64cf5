"""`gatewayd command sign`: an operator command signed for the MQTT command topic, printed for
mosquitto_pub (docs/mqtt.md, "Authorising commands")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gatewayd.cli.parsers import add_command, add_config_option, command_texts
from gatewayd.config import ConfigError, load_config

EXAMPLE_ACK = '{"command": "ack", "alert": "plant-7:pump-1:model:1795000000000"}'


TEXTS = command_texts("gatewayd.cli")


def add_parser(sub: argparse._SubParsersAction) -> None:
    command = add_command(sub, "command", TEXTS)
    csub = command.add_subparsers(dest="command_command", required=True, metavar="COMMAND")
    sign = add_command(csub, "command sign", TEXTS)
    sign.add_argument("json", metavar="JSON", help="the command, a JSON object (ack, label or missed)")
    add_config_option(sign)
    sign.add_argument(
        "--secret-file", type=Path, help="the shared secret (default: the configuration's mqtt.command_secret_file)"
    )
    sign.add_argument(
        "--gateway",
        help="the gateway it is for (default: the configuration's gateway name); "
        "with --secret-file too, no configuration is read",
    )


def run(args: argparse.Namespace) -> int:
    from gatewayd.alerts import commands
    from gatewayd.publishing import command_auth

    topic = None
    devices = None
    if args.secret_file is not None and args.gateway is not None:
        secret_file, gateway = args.secret_file, args.gateway
    else:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        gateway = args.gateway or config.gateway.name
        devices = [d.name for d in config.devices] if gateway == config.gateway.name else None
        secret_file = args.secret_file
        if config.mqtt is not None:
            topic = f"{config.mqtt.topic_prefix.rstrip('/')}/{gateway}/command"
            secret_file = secret_file or config.mqtt.command_secret_file
        if secret_file is None:
            print(f"error: {args.config} sets no mqtt.command_secret_file; give --secret-file", file=sys.stderr)
            return 2
    try:
        secret = command_auth.load_secret(secret_file)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"error: {secret_file}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    try:
        data = commands.decode(args.json.encode("utf-8", "surrogateescape"))
        commands.validate_any(data, gateway, devices)
        payload = command_auth.sign(data, secret, gateway)
    except ValueError as exc:  # CommandError, or a key that signing adds
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(payload) > commands.MAX_PAYLOAD_BYTES:
        print(
            f"error: the signed command has {len(payload)} bytes, the gateway takes {commands.MAX_PAYLOAD_BYTES} "
            "at most",
            file=sys.stderr,
        )
        return 2
    sys.stdout.buffer.write(payload + b"\n")
    sys.stdout.flush()
    where = f"on {topic} " if topic else ""
    print(f"publish it {where}within {command_auth.WINDOW_S} s, once, without retain", file=sys.stderr)
    return 0
