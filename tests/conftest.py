"""Shared fixtures. Every test must leave no child process and no thread behind."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.demo.virtual_node import VirtualNode
from tests.services import PostgresServer, RedisServer, start_postgres, start_redis

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_finish(session: pytest.Session) -> None:
    """What runs long at little CPU starts now, in the background: the package tests' packages
    and roots, and the demo's detection story."""
    from tests.integration import demo_run
    from tests.packaging import prepare

    if os.geteuid() == 0:
        prepare.start(prepare.pairs_of(item.nodeid for item in session.items))
    if any(item.nodeid.startswith(demo_run.NODE_ID) for item in session.items):
        demo_run.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.integration import demo_run
    from tests.packaging import prepare

    prepare.stop()
    demo_run.stop()


def _children() -> set[int]:
    pids: set[int] = set()
    task_dir = Path(f"/proc/{os.getpid()}/task")
    for task in task_dir.iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def _live(pids: set[int]) -> set[int]:
    live = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            live.add(pid)
    return live


@pytest.fixture(autouse=True)
def no_leaked_processes_or_threads() -> Iterator[None]:
    children_before = _children()
    threads_before = set(threading.enumerate())
    yield
    leaked = _live(_children() - children_before)
    assert not leaked, f"test left child processes running: {sorted(leaked)}"
    extra = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    for t in extra:
        t.join(timeout=2)
    extra = [t.name for t in extra if t.is_alive()]
    assert not extra, f"test left threads running: {extra}"


@pytest.fixture
def virtual_node() -> Iterator[VirtualNode]:
    with VirtualNode(unit=1, seed=7, period_ms=50) as node:
        yield node


@pytest.fixture
def pty_pair(tmp_path):
    """Two linked pseudo-terminals from socat: a serial line with a node on one end and a
    Modbus master on the other."""
    import shutil
    import subprocess
    import time

    socat = shutil.which("socat")
    assert socat, "socat is missing: make test installs it (Debian package socat)"
    a, b = tmp_path / "node-tty", tmp_path / "master-tty"
    proc = subprocess.Popen(
        [socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while not (a.exists() and b.exists()):
            assert time.monotonic() < deadline, "socat did not create the pty pair"
            time.sleep(0.02)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


class Mosquitto:
    """A broker of the test's own on a free port (Debian's mosquitto)."""

    def __init__(self, folder: Path):
        import shutil

        from gatewayd.demo.virtual_node import free_port

        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        assert Path(self.binary).exists(), "mosquitto is missing: make test installs it (Debian package mosquitto)"
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.process = None

    def start(self) -> None:
        import socket
        import subprocess
        import time

        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def mosquitto(tmp_path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory) -> Iterator[PostgresServer]:
    """One PostgreSQL per session, started only when a test asks: tests get a database each."""
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """One Redis per session, started only when a test asks."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


_database_numbers = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database of the session's server, one per test."""
    return postgres_server.create_database(f"test_{next(_database_numbers)}")
