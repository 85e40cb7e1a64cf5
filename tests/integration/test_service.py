"""gatewayd under a systemd-like supervisor: the notify socket is a datagram socket of the
test's own; readiness, watchdog and status messages, SIGHUP reload, SIGTERM within 5 s."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from gatewayd.demo.virtual_node import VirtualNode
from tests.integration.support import stop_everything

pytestmark = pytest.mark.integration


def config_text(state, ports):
    devices = "".join(
        f'\n[[devices]]\nname = "node-{i}"\nhost = "127.0.0.1"\nport = {p}\nunit = {i}\ninterval_s = 0.2\n'
        for i, p in enumerate(ports, 1)
    )
    return f'[gateway]\nstate_dir = "{state}"\n\n[store]\nflush_interval_s = 0.2\n{devices}'


class NotifySocket:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, predicate, timeout_s=15.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for i, m in enumerate(self.messages):
                if predicate(m):
                    del self.messages[: i + 1]
                    return m
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                pass
        raise AssertionError(f"no matching notification; got {self.messages}")

    def close(self):
        self.sock.close()


def test_ready_watchdog_status_reload_and_stop(tmp_path):
    nodes = [VirtualNode(unit=1, seed=1), VirtualNode(unit=2, seed=2)]
    notify = NotifySocket(tmp_path / "notify")
    proc = None
    try:
        for n in nodes:
            n.start()
        config = tmp_path / "gatewayd.toml"
        config.write_text(config_text(tmp_path / "state", [nodes[0].port]))
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "gatewayd", "run", "--config", str(config)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert "READY=1" in notify.wait_for(lambda m: "READY=1" in m)
        notify.wait_for(lambda m: "WATCHDOG=1" in m)
        notify.wait_for(lambda m: "STATUS=1/1 devices online" in m)

        config.write_text(config_text(tmp_path / "state", [n.port for n in nodes]))
        proc.send_signal(signal.SIGHUP)
        notify.wait_for(lambda m: "RELOADING=1" in m)
        notify.wait_for(lambda m: "READY=1" in m)
        notify.wait_for(lambda m: "STATUS=2/2 devices online" in m)

        config.write_text("[[devices]]\nname = 'broken'\n")  # invalid: the running one stays
        proc.send_signal(signal.SIGHUP)
        notify.wait_for(lambda m: "READY=1" in m)
        notify.wait_for(lambda m: "STATUS=2/2 devices online" in m)

        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 5.0
        assert proc.returncode == 0, stderr
        assert "configuration not reloaded, keeping the running one" in stderr
        assert "devices.0: a tcp device needs host" in stderr
    finally:
        stop_everything(proc, nodes)
        notify.close()


def test_status_shows_the_running_daemon(tmp_path):
    node = VirtualNode(unit=1, seed=5)
    node.start()
    config = tmp_path / "gatewayd.toml"
    config.write_text(config_text(tmp_path / "state", [node.port]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatewayd", "run", "--config", str(config)], stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 15
        out = ""
        while time.monotonic() < deadline and "node-1: online" not in out:
            time.sleep(0.3)
            res = subprocess.run(
                [sys.executable, "-m", "gatewayd", "status", "--config", str(config)], capture_output=True, text=True
            )
            out = res.stdout
        assert "node-1: online" in out and "readings written" in out, out
        assert "pressure" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        node.stop()
    res = subprocess.run(
        [sys.executable, "-m", "gatewayd", "status", "--config", str(config)], capture_output=True, text=True
    )
    assert res.returncode == 0 and "daemon: stopped" in res.stdout
