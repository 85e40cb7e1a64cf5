"""A board whose firmware has the application frozen in: the manifest freezes what edge-flash
would otherwise deploy, and `frozen = true` deploys only main.py and config.json. The frozen
image itself cannot be built here (no ESP-IDF): the virtual board stands in for it with a
folder of compiled modules on its import path after the flash, as frozen modules are."""

from pathlib import Path

import pytest
from edge_flash.build import compile_firmware, firmware_sources
from edge_flash.deploy import DeployError, build_files, deploy
from edge_flash.virtual_board import VirtualBoard

from gatewayd.demo.virtual_node import free_port

from .test_deploy import bounds_over_modbus, virtual_plan
from .test_inventory import FIRMWARE


def frozen_modules(manifest: Path) -> list[str]:
    """Run the manifest as MicroPython's build does, with its commands recorded."""
    frozen: list[str] = []
    included: list[str] = []

    def module(path: str, base_path: str = ".", opt: int | None = None) -> None:
        assert (manifest.parent / base_path / path).is_file(), path
        frozen.append(Path(path).stem)

    exec(manifest.read_text(), {"include": included.append, "module": module})  # noqa: S102
    assert included == ["$(PORT_DIR)/boards/manifest.py"], "the port's own frozen modules stay in"
    return frozen


def test_the_manifest_freezes_what_deploy_would_put_on_an_esp32():
    deployed = [p.stem for p in firmware_sources(FIRMWARE, board="esp32")]
    assert sorted(frozen_modules(FIRMWARE / "frozen" / "manifest.py")) == sorted(deployed)


def test_frozen_deploy_sends_only_main_and_config_and_the_node_runs_from_the_image(tmp_path):
    tcp_port = free_port()
    image = tmp_path / "image"
    compile_firmware(FIRMWARE, image, board="virtual")
    (image / "main.py").unlink()  # main.py is not frozen: it stays on the file system
    flash = tmp_path / "flash"
    with VirtualBoard(flash, frozen=image) as board:
        # First as a plain board: every module goes on the file system.
        report = deploy(virtual_plan(tcp_port), board.url, FIRMWARE, boot_timeout_s=15)
        assert "node.mpy" in report.written and (flash / "node.mpy").exists()
        # Then frozen: the modules on the file system would shadow the image's, so they go.
        plan = virtual_plan(tcp_port, "frozen = true", "[defaults.thresholds.level]\nbounds = [2, 8]")
        assert sorted(build_files(plan, FIRMWARE)) == ["config.json", "main.py"]
        again = deploy(plan, board.url, FIRMWARE, boot_timeout_s=15)
        assert "node.mpy" in again.removed and "hal_unix.mpy" in again.removed
        assert not list(flash.glob("*.mpy"))
        assert again.identity is not None and again.identity.unit == 1
        assert bounds_over_modbus(tcp_port) == (2.0, 8.0)


def test_frozen_deploy_to_a_board_without_the_application_says_so(tmp_path):
    plan = virtual_plan(free_port(), "frozen = true")
    with VirtualBoard(tmp_path / "flash") as board:
        with pytest.raises(
            DeployError,
            match=r"module 'app' is missing on the board; the inventory says the "
            r"application is frozen into the board's firmware \(frozen = true\)",
        ):
            deploy(plan, board.url, FIRMWARE, boot_timeout_s=60)
