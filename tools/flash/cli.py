"""Command line of edge-flash."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.flash.build import MARCHES, BuildError, compile_firmware


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
    build.add_argument("--firmware", type=Path, default=default_firmware_dir(), help="source folder (default: %(default)s)")
    build.add_argument("--out", type=Path, required=True, help="output folder for the .mpy files")
    build.add_argument("--march", choices=MARCHES, help="native code architecture (xtensawin for ESP32)")
    build.add_argument("--include-host-only", action="store_true", help="also compile the virtual-node entry point")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "build":
        try:
            compiled = compile_firmware(args.firmware, args.out, march=args.march,
                                        include_host_only=args.include_host_only)  # fmt: skip
        except BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for c in compiled:
            print(f"  {c.source.name:<20} -> {c.output} ({c.size} bytes)")
        print(f"{len(compiled)} modules, {sum(c.size for c in compiled)} bytes")
        return 0
    raise AssertionError(args.command)
