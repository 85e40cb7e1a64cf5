"""Options and the session's bench: a real node when `--port` is given, otherwise the virtual
board (the firmware deployed into the MicroPython unix port behind a TCP console), its
Modbus over TCP on loopback and RTU over a pty pair, and the virtual rig."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.demo.virtual_node import free_port
from hil_tests.bench import VIRTUAL_INVENTORY, Bench
from hil_tests.link import NodeLink
from hil_tests.rig import VirtualRig
from edge_flash.deploy import deploy
from edge_flash.inventory import load_inventory, parse_inventory
from edge_flash.virtual_board import VirtualBoard

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
VIRTUAL_RTU_FRAMES = 500  # like a master, the sender waits 20 ms after each frame that gets no answer


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hil", "hardware-in-the-loop bench (hil_tests/README.md)")
    g.addoption("--port", help="console (USB serial) of the node under test; without it, the virtual board")
    g.addoption("--inventory", help="inventory holding the node's entry (with --port)")
    g.addoption("--node", help="node id in the inventory (default: its first node)")
    g.addoption("--modbus-port", help="USB-RS485 adapter on the node's bus: Modbus RTU, settings from the inventory")
    g.addoption("--modbus-host", help="HOST[:PORT] of the node's Modbus TCP")
    g.addoption("--rig", help="MODULE:FACTORY that builds the I/O rig; factory(pytest_config) -> rig")
    g.addoption("--channel", help="channel the rig drives (default: the first that trips an output)")
    g.addoption("--no-deploy", action="store_true", help="test the node as it is, without deploying first")
    g.addoption(
        "--malformed-frames", type=int, default=10_000, help="malformed frames per transport (default: %(default)s)"
    )
    g.addoption(
        "--rtu-frames",
        type=int,
        help=f"over RTU (default: --malformed-frames; {VIRTUAL_RTU_FRAMES} on the virtual pty)",
    )
    g.addoption(
        "--slack-ms",
        type=float,
        default=25.0,
        help="allowed beyond the sample periods a trip needs (default: %(default)s)",
    )


@pytest.fixture(scope="session")
def bench(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, record_testsuite_property
) -> Iterator[Bench]:
    config = request.config
    if config.getoption("--port"):
        made = _real_bench(config)
    else:
        made = _virtual_bench(tmp_path_factory.mktemp("hil"))
    with made as b:
        b.slack_s = config.getoption("--slack-ms") / 1000
        b.frames = config.getoption("--malformed-frames")
        b.rtu_frames = config.getoption("--rtu-frames") or (
            min(b.frames, VIRTUAL_RTU_FRAMES) if b.virtual else b.frames
        )
        if config.getoption("--channel"):
            names = b.plan.channels
            if config.getoption("--channel") not in names:
                raise pytest.UsageError(f"--channel: the node has {', '.join(names)}")
            b.channel = names.index(config.getoption("--channel"))
        else:
            b.channel = next(i for i, c in enumerate(b.plan.config["channels"]) if c.get("trips"))
        record_testsuite_property("board", b.plan.board)
        record_testsuite_property("node", b.plan.id)
        record_testsuite_property("console", b.port)
        record_testsuite_property("modbus", b.link.name)
        if b.deploy is not None and b.deploy.identity is not None:
            record_testsuite_property("firmware", b.deploy.identity.firmware)
            record_testsuite_property("deploy_s", f"{b.deploy.seconds:.2f}")
        yield b


@pytest.fixture
def rig(bench: Bench):
    if bench.rig is None:
        pytest.skip("no I/O rig on this bench: give --rig MODULE:FACTORY (hil_tests/README.md)")
    return bench.rig


@pytest.fixture
def healthy(bench: Bench, rig):
    """The node released by the rig, no trip latched, outputs on; and left so, whatever the
    test did (a failure here is the test's teardown error, not the next test's)."""
    bench.make_healthy()
    yield rig
    bench.make_healthy()


class _virtual_bench:
    """The virtual board with the virtual bench's node deployed on it for real."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.board: VirtualBoard | None = None
        self.socat: subprocess.Popen[bytes] | None = None
        self.links: list[NodeLink] = []

    def __enter__(self) -> Bench:
        node_tty, adapter_tty = self.folder / "node-tty", self.folder / "adapter-tty"
        socat = shutil.which("socat")
        assert socat, "socat is missing: make test installs it (Debian package socat)"
        self.socat = subprocess.Popen(
            [socat, f"pty,raw,echo=0,link={node_tty}", f"pty,raw,echo=0,link={adapter_tty}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while not (node_tty.exists() and adapter_tty.exists()):
            assert time.monotonic() < deadline, "socat did not make the RS-485 stand-in (a pty pair)"
            time.sleep(0.02)
        tcp_port = free_port()
        text = VIRTUAL_INVENTORY.format(period_ms=100, watchdog_ms=1000, tcp_port=tcp_port, rtu_device=node_tty)
        (self.folder / "bench.toml").write_text(text)
        plan = parse_inventory(text, str(self.folder / "bench.toml"), FIRMWARE).plan("bench-1")
        self.board = VirtualBoard(self.folder / "flash", console_log=self.folder / "console.log")
        self.board.start()
        report = deploy(plan, self.board.url, FIRMWARE, boot_timeout_s=15)
        link = NodeLink("tcp", plan.unit, host="127.0.0.1", port=tcp_port)
        rtu = NodeLink("rtu", plan.unit, device=str(adapter_tty), baud=19200, parity="N")
        self.links = [link, rtu]
        rig = VirtualRig(self.folder / "flash")
        log = self.folder / "console.log"
        return Bench(plan, self.board.url, link, rig, report, virtual=True, rtu=rtu, console_log=log)

    def __exit__(self, *exc: object) -> None:
        for link in self.links:
            link.close()
        if self.board is not None:
            self.board.stop()
        if self.socat is not None:
            self.socat.terminate()
            self.socat.wait(timeout=5)


class _real_bench:
    """A node on the bench: deployed from its inventory entry (unless --no-deploy), reached
    over the bench's RS-485 adapter or its Modbus TCP address."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.link: NodeLink | None = None

    def __enter__(self) -> Bench:
        opt = self.config.getoption
        if not opt("--inventory"):
            raise pytest.UsageError("--port needs --inventory (and --node) describing the node on the bench")
        inventory = load_inventory(opt("--inventory"), FIRMWARE)
        plan = inventory.plan(opt("--node") or inventory.ids[0])
        report = None if opt("--no-deploy") else deploy(plan, opt("--port"), FIRMWARE)
        modbus = plan.config.get("modbus", {})
        if opt("--modbus-port"):
            rtu = modbus.get("rtu") or {}
            self.link = NodeLink(
                "rtu",
                plan.unit,
                device=opt("--modbus-port"),
                baud=rtu.get("baud", 19200),
                parity=rtu.get("parity", "E"),
                stop_bits=rtu.get("stop_bits", 1),
            )
        elif opt("--modbus-host"):
            host, _, port = opt("--modbus-host").partition(":")
            self.link = NodeLink("tcp", plan.unit, host=host, port=int(port or modbus.get("tcp", {}).get("port", 502)))
        else:
            raise pytest.UsageError("a real bench needs --modbus-port (RS-485 adapter) or --modbus-host (Modbus TCP)")
        rig = None
        if opt("--rig"):
            module, _, factory = opt("--rig").partition(":")
            rig = getattr(importlib.import_module(module), factory or "make_rig")(self.config)
        return Bench(plan, opt("--port"), self.link, rig, report, virtual=False)

    def __exit__(self, *exc: object) -> None:
        if self.link is not None:
            self.link.close()
