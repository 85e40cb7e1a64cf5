"""Command line of edge-flash. Exit codes: 0 done, 1 a device or deploy failed, 2 the input
(inventory, image, arguments) is wrong and nothing was touched."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edge_flash.build import MARCHES, BuildError, compile_firmware
from gatewayd.cli.parsers import add_command, command_texts

if TYPE_CHECKING:
    from rich.console import Console

    from edge_flash.inventory import Inventory

EXIT_FAILED = 1
EXIT_INPUT = 2


TEXTS = command_texts("edge_flash")


def default_firmware_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "firmware"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-flash", description="Build, flash and provision edge nodes.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = add_command(sub, "build", TEXTS)
    build.add_argument(
        "--firmware", type=Path, default=default_firmware_dir(), help="source folder (default: %(default)s)"
    )
    build.add_argument("--out", type=Path, required=True, help="output folder for the .mpy files")
    build.add_argument("--march", choices=MARCHES, help="native code architecture (xtensawin for ESP32)")
    build.add_argument("--include-host-only", action="store_true", help="also compile the virtual-node entry point")

    firmware = add_command(sub, "firmware", TEXTS)
    firmware.add_argument("--port", required=True, help="serial port of the board")
    firmware.add_argument("--image", type=Path, required=True, help="MicroPython firmware image (.bin)")
    firmware.add_argument("--chip", help="refuse unless the image is for this chip (esp32, esp32s3 ...)")
    firmware.add_argument("--baud", type=int, default=460800, help="baud rate while writing (default: %(default)s)")
    firmware.add_argument("--no-erase", action="store_true", help="keep the rest of the flash (files survive)")
    firmware.add_argument("--dry-run", action="store_true", help="check the image and print the plan")

    deploy = add_command(sub, "deploy", TEXTS)
    deploy.add_argument("--port", help="serial port, or socket://HOST:PORT (default: the inventory's)")
    deploy.add_argument("--node", required=True, help="node id in the inventory")
    _inventory_arguments(deploy)

    fleet = add_command(sub, "fleet", TEXTS)
    _inventory_arguments(fleet)
    fleet.add_argument("--dry-run", action="store_true", help="check every node and print the plan; touch nothing")

    board = add_command(sub, "virtual-board", TEXTS)
    from edge_flash.virtual_board import add_arguments

    add_arguments(board)
    return parser


def _inventory_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inventory", type=Path, required=True, help="fleet inventory (TOML)")
    parser.add_argument(
        "--firmware", type=Path, default=default_firmware_dir(), help="source folder (default: %(default)s)"
    )
    parser.add_argument(
        "--boot-timeout", type=float, default=30.0, help="seconds to wait for the node to start (default: %(default)s)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"build": _build, "firmware": _firmware, "deploy": _deploy, "fleet": _fleet, "virtual-board": _board}
    return commands[args.command](args)


def _build(args: argparse.Namespace) -> int:
    try:
        compiled = compile_firmware(args.firmware, args.out, march=args.march, include_host_only=args.include_host_only)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for c in compiled:
        print(f"  {c.source.name:<20} -> {c.output} ({c.size} bytes)")
    print(f"{len(compiled)} modules, {sum(c.size for c in compiled)} bytes")
    return 0


def _firmware(args: argparse.Namespace) -> int:
    from edge_flash.esp import FlashError, flash, plan_flash

    try:
        plan = plan_flash(args.port, args.image, chip=args.chip, baud=args.baud, erase=not args.no_erase)
    except FlashError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    print(f"image for {plan.image.chip}, {len(plan.image.data)} bytes, written at {plan.offset:#x}")
    print("  " + " ".join(plan.command()))
    if args.dry_run:
        return 0
    try:
        chip = flash(plan)
    except FlashError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"done: {chip} now runs {plan.image.path.name}")
    return 0


def _load(args: argparse.Namespace):
    from edge_flash.inventory import InventoryError, load_inventory

    try:
        return load_inventory(args.inventory, args.firmware)
    except InventoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _deploy(args: argparse.Namespace) -> int:
    from edge_flash.deploy import DeployError, deploy
    from edge_flash.device import BoardError
    from edge_flash.fleet import resolve_port, summary
    from edge_flash.inventory import InventoryError

    inventory = _load(args)
    if inventory is None:
        return EXIT_INPUT
    try:
        plan = inventory.plan(args.node)
    except InventoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    started = time.monotonic()
    try:
        port = args.port or resolve_port(plan)
        report = deploy(
            plan,
            port,
            args.firmware,
            boot_timeout_s=args.boot_timeout,
            progress=lambda step: print(f"  {plan.id}: {step}", file=sys.stderr),
        )
    except (DeployError, BoardError) as exc:
        print(f"error: {plan.id}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{plan.id} on {port}: {summary(report)} ({time.monotonic() - started:.1f} s)")
    return 0


def _fleet(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edge_flash.fleet import plan_table, results_table, run_fleet

    inventory = _load(args)
    if inventory is None:
        return EXIT_INPUT
    console = Console(highlight=False)
    if args.dry_run:
        check = plan_table(inventory)
        console.print(check.table)
        for node, why in check.invalid.items():
            console.print(f"[red]invalid[/] {node}: {why}")
        for node, why in check.unreachable.items():
            console.print(f"[yellow]not connected now[/] {node}: {why}")
        _print_secrets(console, inventory)
        return EXIT_INPUT if check.invalid else 0
    missing = inventory.missing_secrets()
    if missing:  # refused before any node is touched: a half-deployed fleet helps nobody
        print(f"error: {_secrets_line(missing)} not set; set them and run again", file=sys.stderr)
        return EXIT_INPUT
    results = run_fleet(inventory, console, boot_timeout_s=args.boot_timeout)
    console.print(results_table(results))
    for r in results:
        console.print(f"{r.node}: {r.detail}" if r.ok else f"[red]{r.node} failed[/]: {r.detail}")
    failed = [r.node for r in results if not r.ok]
    console.print(
        f"{len(results) - len(failed)} of {len(results)} nodes deployed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return EXIT_FAILED if failed else 0


def _secrets_line(secrets: dict[str, list[str]]) -> str:
    return ", ".join(f"${variable} (for {', '.join(nodes)})" for variable, nodes in secrets.items())


def _print_secrets(console: Console, inventory: Inventory) -> None:
    """Which environment variables a real run reads secrets from, and which are unset now."""
    needed = inventory.secrets()
    if not needed:
        return
    console.print(f"secrets a real run reads from the environment: {_secrets_line(needed)}")
    missing = inventory.missing_secrets()
    if missing:
        console.print(f"[yellow]not set now[/]: {_secrets_line(missing)} (a real run refuses until they are set)")
    else:
        console.print("all of them are set now")


def _board(args: argparse.Namespace) -> int:
    from edge_flash.virtual_board import serve

    return serve(args)
