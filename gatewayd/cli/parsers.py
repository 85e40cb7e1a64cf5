"""How the project's command lines declare a command (gatewayd, cloud-sync, edge-flash). Each
command's help lives as text in its package's `commands.toml`, keyed by its path ("alert
list"): a one-line `help` for the command list, a `description` and one `example` that
`--help` shows. The options stay in the code beside the command they belong to."""

from __future__ import annotations

import argparse
import functools
import tomllib
from importlib import resources
from pathlib import Path

from gatewayd.config import DEFAULT_CONFIG_PATH


@functools.cache
def command_texts(package: str) -> dict[str, dict[str, str]]:
    """The texts of a package's commands (its commands.toml), read once: every command group of
    a CLI asks for them."""
    return tomllib.loads(resources.files(package).joinpath("commands.toml").read_text(encoding="utf-8"))


def add_command(
    sub: argparse._SubParsersAction, path: str, texts: dict[str, dict[str, str]]
) -> argparse.ArgumentParser:
    text = texts[path]
    return sub.add_parser(
        path.rsplit(" ", 1)[-1],
        help=text["help"],
        description=text["description"],
        epilog=f"example: {text['example']}",
    )


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="TOML file (default: %(default)s)")
