"""What the end-to-end tests share."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from gatewayd.demo.virtual_node import VirtualNode


def stop_everything(daemon: subprocess.Popen | None, nodes: Iterable[VirtualNode]) -> None:
    """A test's cleanup, whatever it reached: a daemon still running is killed (and its pipes
    drained), every virtual node is stopped."""
    if daemon is not None and daemon.poll() is None:
        daemon.kill()
        daemon.communicate()
    for node in nodes:
        node.stop()


def start_daemon(folder: Path, config: str) -> subprocess.Popen:
    """`gatewayd run` as the service runs it, on a configuration written into `folder`."""
    path = folder / "gatewayd.toml"
    path.write_text(config)
    return subprocess.Popen([sys.executable, "-m", "gatewayd", "run", "--config", str(path)], stderr=subprocess.PIPE)
