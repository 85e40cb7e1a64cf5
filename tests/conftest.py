"""Shared fixtures. Every test must leave no child process and no thread behind."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.virtual_node import VirtualNode

REPO = Path(__file__).resolve().parent.parent


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
