"""Command line of cloud-sync."""

from __future__ import annotations

import argparse

from cloud_sync import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloud-sync",
        description="Upload the gateway's outbox to the cloud and pull signed model bundles.",
    )
    parser.add_argument("--version", action="version", version=f"cloud-sync {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    build_parser().print_help()
    return 0
