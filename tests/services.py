"""PostgreSQL and Redis servers of the test suite's own, on free loopback ports, so the cloud
tier's tests never touch (or depend on) the machine's servers on 5432 and 6379 and run the
same on a fresh Debian machine and in CI (as root)."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from gatewayd.demo.virtual_node import free_port

POSTGRES_ROOT = Path("/usr/lib/postgresql")  # Debian's layout: one bin folder per major version
REDIS_SERVER = Path("/usr/bin/redis-server")
START_TIMEOUT_S = 60


def postgres_bin_dir() -> Path:
    """The newest installed major version's bin folder: Debian's binaries, not whatever PATH finds."""
    versions = [initdb.parent.parent for initdb in POSTGRES_ROOT.glob("*/bin/initdb")]
    assert versions, f"no PostgreSQL under {POSTGRES_ROOT}: make test installs it (Debian package postgresql)"
    newest = max(versions, key=lambda p: tuple(int(part) for part in p.name.split(".") if part.isdigit()))
    return newest / "bin"


class PostgresServer:
    """A throwaway cluster; one database per test comes from create_database()."""

    def __init__(self, bin_dir: Path, folder: Path, port: int, log_copy: Path):
        self.bin_dir = bin_dir
        self.folder = folder
        self.data_dir = folder / "data"
        self.log = folder / "postgres.log"
        self.log_copy = log_copy
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def create_database(self, name: str) -> str:
        """A fresh, empty database, so tests share the server's start-up cost but no state."""
        command = [str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name]
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30, env=_client_env())
        assert result.returncode == 0, f"createdb {name} failed: {result.stderr}\n{self.log_text()}"
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def log_text(self) -> str:
        try:
            return f"--- server log (kept as {self.log_copy}) ---\n{self.log.read_text(errors='replace')}"
        except OSError as e:
            return f"(no server log: {e})"

    def stop(self) -> None:
        """Immediate stop: the data is thrown away anyway, so no checkpoint is worth waiting for."""
        if not self.folder.exists():
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                _run_as_postgres(
                    [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"],
                    self.folder,
                    "pg_ctl stop",
                    self,
                )
        finally:
            if self.log.exists():  # kept for a post-mortem: the cluster folder goes
                shutil.copyfile(self.log, self.log_copy)
            shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(tmp_dir: Path) -> PostgresServer:
    """initdb and start a cluster on a free port of 127.0.0.1, its socket in its own folder.

    The cluster lives in a folder of its own under /tmp rather than under tmp_dir: PostgreSQL
    refuses to run as root, so as root it runs as Debian's postgres user, who cannot enter
    pytest's 0700 folders. tmp_dir receives a copy of the server log at stop."""
    bin_dir = postgres_bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="test-postgres-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(folder, user="postgres", group="postgres")
    server = PostgresServer(bin_dir, folder, free_port(), Path(tmp_dir) / "postgres.log")
    try:
        _run_as_postgres(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(server.data_dir),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=C.UTF-8",  # always present on Debian, unlike the caller's LANG
                "--no-sync",
            ],
            folder,
            "initdb",
            None,
        )
        options = (
            f"-p {server.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={shlex.quote(str(folder))}"
            " -c fsync=off -c max_connections=200"
        )
        _run_as_postgres(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(server.data_dir),
                "-l",
                str(server.log),
                "-o",
                options,
                "-w",  # returns once the server accepts connections
                "-t",
                str(START_TIMEOUT_S),
                "start",
            ],
            folder,
            "pg_ctl start",
            server,
        )
    except BaseException:
        server.stop()
        raise
    return server


def _run_as_postgres(command: list[str], folder: Path, what: str, server: PostgresServer | None) -> None:
    """initdb and pg_ctl refuse to run as root: as root they run as the postgres system user."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    # cwd: a folder the postgres user may enter (root's working folder is often /root, 0700)
    result = subprocess.run(
        command,
        check=False,
        cwd=folder,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S + 30,
        env=_client_env(),
    )
    if result.returncode != 0:
        log = server.log_text() if server is not None else ""
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{log}")


def _client_env() -> dict[str, str]:
    """The caller's PG* variables (a CI's PGHOST, PGPORT...) must not redirect the test's clients or servers."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


class RedisServer:
    """A Redis without persistence: its data lives as long as the test session."""

    def __init__(self, process: subprocess.Popen, port: int, log: Path):
        self.process = process
        self.port = port
        self.log = log
        self.url = f"redis://127.0.0.1:{port}/0"

    def log_text(self) -> str:
        try:
            return f"--- server log {self.log} ---\n{self.log.read_text(errors='replace')}"
        except OSError as e:
            return f"(no server log: {e})"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_redis(tmp_dir: Path) -> RedisServer:
    """Start redis-server on a free port of 127.0.0.1 and return once it answers PING."""
    assert REDIS_SERVER.exists(), f"{REDIS_SERVER} is missing: make test installs it (Debian package redis-server)"
    tmp_dir = Path(tmp_dir)
    port = free_port()
    log = tmp_dir / "redis.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                str(REDIS_SERVER),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = RedisServer(process, port, log)
    try:
        _wait_for_pong(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_for_pong(server: RedisServer) -> None:
    """Poll until our server answers; its process id in INFO tells it from whatever else took the port."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {server.process.returncode}\n{server.log_text()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1) as s:
                s.sendall(b"PING\r\nINFO server\r\n")
                reply = b""
                while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
            if reply.startswith(b"+PONG"):
                pid = reply.split(b"process_id:", 1)[1].split(b"\r\n", 1)[0]
                if int(pid) == server.process.pid:
                    return
                raise RuntimeError(
                    f"port {server.port} answers for another Redis (pid {int(pid)})\n{server.log_text()}"
                )
        except (OSError, IndexError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT_S} s\n{server.log_text()}")
        time.sleep(0.02)
