"""edge-flash deploy against the virtual board, for real: mpremote over its TCP console,
files hashed on the board, a reset, the identity read back; then the firmware it put there
boots in the unix port and answers Modbus. And the errors a bench meets: no port, a busy
port, a device that does not answer, the wrong board."""

import hashlib
import json
import struct

import pytest
import serial
from edge_flash.cli import main
from edge_flash.deploy import DeployError, build_files, deploy
from edge_flash.device import BoardError
from edge_flash.inventory import parse_inventory
from edge_flash.virtual_board import VirtualBoard
from pymodbus.client import ModbusTcpClient

from gatewayd.acquisition.profiles import edge_node as reg
from gatewayd.demo.virtual_node import free_port

from .test_inventory import FIRMWARE, SMALL


def virtual_plan(tcp_port: int, keys: str = "", tables: str = "", board: str = "virtual"):
    """The small inventory's node, with `keys` added to [defaults] and `tables` after it."""
    text = SMALL.replace("port = 1502", f"port = {tcp_port}").replace('board = "virtual"', f'board = "{board}"\n{keys}')
    return parse_inventory(text.replace("[[nodes]]", f"{tables}\n[[nodes]]", 1), "fleet.toml", FIRMWARE).plan("tank-1")


def bounds_over_modbus(port: int) -> tuple[float, float]:
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    try:
        assert client.connect()
        ident = client.read_input_registers(0, count=reg.IDENTITY_REGISTERS, device_id=1).registers
        assert ident[reg.IR_MAGIC] == reg.MAGIC and ident[reg.IR_NODE_ID] == 1 and ident[reg.IR_CONFIG_ERROR] == 0
        hr = client.read_holding_registers(reg.HR_CHANNEL_BASE, count=4, device_id=1).registers
        return struct.unpack(">ff", struct.pack(">HHHH", *hr))
    finally:
        client.close()


def test_deploy_boots_and_answers_modbus_then_redeploy_sends_only_changes(tmp_path):
    tcp_port = free_port()
    plan = virtual_plan(tcp_port, "watchdog_ms = 1000")
    flash, log = tmp_path / "flash", tmp_path / "console.log"
    steps: list[str] = []
    with VirtualBoard(flash, console_log=log) as board:
        report = deploy(plan, board.url, FIRMWARE, boot_timeout_s=15, progress=steps.append)
        files = build_files(plan, FIRMWARE)
        assert sorted(report.written) == sorted(files) and not report.unchanged and not report.removed
        assert "hal_unix.mpy" in files and "hal_esp32.mpy" not in files and "virtual_node.mpy" not in files
        for name, data in files.items():
            assert hashlib.sha256((flash / name).read_bytes()).digest() == hashlib.sha256(data).digest(), name
        assert report.board is not None and report.board.platform == "linux"
        assert report.identity is not None and (report.identity.unit, report.identity.channels) == (1, 1)
        assert bounds_over_modbus(tcp_port) == (1.0, 9.0)

        # A second deploy to the running node (its watchdog armed): a new threshold, a stale
        # source that would shadow its module, a file the last deploy left, a file of the site's.
        (flash / "node.py").write_text("raise ImportError('stale source')\n")
        (flash / "old.mpy").write_bytes(b"M")
        manifest = json.loads((flash / "deployed.json").read_text())
        (flash / "deployed.json").write_text(json.dumps({**manifest, "files": manifest["files"] + ["old.mpy"]}))
        (flash / "site_driver.py").write_text("# the site's own sensor driver\n")
        retuned = virtual_plan(tcp_port, "watchdog_ms = 1000", "[defaults.thresholds.level]\nbounds = [2, 8]")
        steps.clear()
        again = deploy(retuned, board.url, FIRMWARE, boot_timeout_s=15, progress=steps.append)
        assert sorted(again.written) == ["config.json", "main.py"]
        assert again.removed == ["node.py", "old.mpy"] and (flash / "site_driver.py").exists()
        assert "stopping the application" in steps
        assert bounds_over_modbus(tcp_port) == (2.0, 8.0)
    console = log.read_text(errors="replace")
    assert console.count("node 1 running: 1 channels, register map 1, firmware") == 2
    assert "watchdog" not in console, "the watchdog reset the board in the middle of a deploy"


def test_the_wrong_board_is_refused_before_anything_is_written(tmp_path):
    plan = virtual_plan(free_port(), board="esp32")
    with VirtualBoard(tmp_path / "flash") as board:
        with pytest.raises(
            DeployError,
            match=r"wrong board on socket://127\.0\.0\.1:\d+: the inventory says esp32 "
            r"\(MicroPython for esp32\), the board runs MicroPython [\d.]+ for linux",
        ):
            deploy(plan, board.url, FIRMWARE)
    assert not list((tmp_path / "flash").iterdir())


def test_port_errors(tmp_path, pty_pair):
    plan = virtual_plan(free_port())
    with pytest.raises(BoardError, match=r"^no port /dev/ttyUSB-none: no such device"):
        deploy(plan, "/dev/ttyUSB-none", FIRMWARE)
    node_end, far_end = pty_pair
    with pytest.raises(BoardError, match=r"no MicroPython REPL answered within 1 s \(is MicroPython flashed\?"):
        deploy(plan, far_end, FIRMWARE, repl_timeout_s=1)
    with serial.Serial(far_end, exclusive=True):
        with pytest.raises(BoardError, match=rf"^port {far_end} is busy: another program holds it"):
            deploy(plan, far_end, FIRMWARE)
    with pytest.raises(BoardError, match=r"connection refused \(is the virtual board running\?\)"):
        deploy(plan, f"socket://127.0.0.1:{free_port()}", FIRMWARE)


def test_cli_deploy(tmp_path, capsys):
    tcp_port = free_port()
    inventory = tmp_path / "fleet.toml"
    inventory.write_text(SMALL.replace("port = 1502", f"port = {tcp_port}"))
    with VirtualBoard(tmp_path / "flash") as board:
        code = main(["deploy", "--port", board.url, "--node", "tank-1", "--inventory", str(inventory)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"tank-1 on {board.url}: node 1 running, 1 channels, register map 1" in out
    assert "tank-1: copying" in err and "tank-1: verifying" in err
    inventory.write_text(SMALL.replace("unit = 1", "unit = 0"))
    assert main(["deploy", "--node", "tank-1", "--inventory", str(inventory)]) == 2
    assert "nodes.0.unit: Input should be greater than or equal to 1" in capsys.readouterr().err
