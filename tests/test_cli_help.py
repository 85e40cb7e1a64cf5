"""Every command of every CLI has help text and an example (docs that match the tool)."""

import argparse

import pytest
from edge_flash.cli import build_parser as edge_flash_parser

from cloud_sync.cli import build_parser as cloud_sync_parser
from gatewayd.cli.main import build_parser as gatewayd_parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("parser", [gatewayd_parser(), edge_flash_parser(), cloud_sync_parser()], ids=lambda p: p.prog)
def test_every_command_has_help_and_an_example(parser):
    assert parser.description
    for name, sub in subcommands(parser).items():
        assert sub.description, f"{parser.prog} {name} has no description"
        assert sub.epilog and sub.epilog.startswith(f"example: {parser.prog} {name}"), (
            f"{parser.prog} {name}: no example"
        )
        for inner, leaf in subcommands(sub).items():  # nested commands, e.g. gatewayd model train
            assert leaf.description, f"{parser.prog} {name} {inner} has no description"
            assert leaf.epilog and leaf.epilog.startswith(f"example: {parser.prog} {name} {inner}"), (
                f"{parser.prog} {name} {inner}: no example"
            )


def test_gatewayd_commands():
    assert set(subcommands(gatewayd_parser())) == {
        "run",
        "check-config",
        "demo",
        "status",
        "export",
        "model",
        "alert",
        "command",
        "evaluate",
        "probe",
    }
