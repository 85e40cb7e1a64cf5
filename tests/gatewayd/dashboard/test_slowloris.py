"""The dashboard under a slowloris attack: 100 connections from the same address as the
legitimate clients, each sending a partial request head a byte a second (or nothing), reopened
whenever the server closes them. The page and the API must go on answering meanwhile."""

from __future__ import annotations

import asyncio
import http.client
import inspect
import json
import os
import sys
import threading
import time
from itertools import cycle

import pytest

from gatewayd.dashboard import server, views
from gatewayd.demo.virtual_node import free_port

from .support import request, running_gateway

pytestmark = pytest.mark.integration

ATTACKERS = 100
SILENT_ATTACKERS = 30  # connect and send nothing; the others trickle a head
TRICKLE_S = 1.0  # a byte every second per trickling connection
ATTACK_S = 15.0  # longer than the head deadline and the request deadline
ANSWER_WITHIN_S = 3.0  # each legitimate request, connect to last byte
LEGIT_PAUSE_S = 0.2  # between one legitimate client's requests (pacing, not synchronisation)


def attack(port: int, sockets: int, silent: int, trickle_s: float) -> None:
    """Run in a process of its own, as it would be on another machine (and its work does not
    compete with the server for the test's interpreter). Keeps `sockets` connections open to
    the port, the first `silent` sending nothing, the others one byte of an endless request head
    at once and then every `trickle_s`; a connection the server closes is reopened `trickle_s`
    later, as slowloris tools reopen theirs on their next round (reopened at once, they would
    make a flood of connections, another attack, bound by the CPU).
    Prints "ready" once every connection was open, and what it did as JSON when its stdin
    closes."""
    import json
    import selectors
    import socket
    import sys
    import time

    head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    slots: list[socket.socket | None] = [None] * sockets
    sent = [0] * sockets
    due = [0.0] * sockets
    stats = {"connections": 0, "closed_by_server": 0, "answered": 0, "failed_connects": 0, "bytes_sent": 0}
    ready = False

    def drop(i: int) -> None:
        sock = slots[i]
        assert sock is not None
        selector.unregister(sock)
        sock.close()
        slots[i], due[i] = None, time.monotonic() + trickle_s  # reopened on its next round
        stats["closed_by_server"] += 1

    while True:
        now = time.monotonic()
        for i in range(sockets):
            sock = slots[i]
            if sock is None:
                if now < due[i]:
                    continue
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                except OSError:
                    stats["failed_connects"] += 1
                    due[i] = now + trickle_s
                    continue
                sock.setblocking(False)
                slots[i], sent[i], due[i] = sock, 0, now
                selector.register(sock, selectors.EVENT_READ, i)
                stats["connections"] += 1
            if i >= silent and now >= due[i]:
                byte = head[sent[i] : sent[i] + 1] or b"a"  # the header's value never ends
                try:
                    sock.send(byte)
                except OSError:
                    drop(i)
                    continue
                sent[i] += 1
                stats["bytes_sent"] += 1
                due[i] = now + trickle_s
        if not ready and all(slots):
            ready = True
            print("ready", flush=True)
        waits = [due[i] - now for i in range(sockets) if slots[i] is None or i >= silent]
        for key, _ in selector.select(max(0.0, min(waits, default=trickle_s))):
            if key.data is None:  # stdin closed: the test is over
                print(json.dumps(stats), flush=True)
                return
            try:
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
            except OSError:
                data = b""
            if data:
                stats["answered"] += 1  # the server answered a head that never ended: not expected
            else:
                drop(key.data)


async def legitimate_client(port: int, until: float) -> list[tuple[str, int | str, float]]:
    """Requests like an open page's, one after the other: (path, status or error, seconds)."""
    loop = asyncio.get_running_loop()
    done: list[tuple[str, int | str, float]] = []
    paths = cycle(("/api/overview", "/"))
    while loop.time() < until:
        path = next(paths)
        started = time.perf_counter()
        try:
            status: int | str = (await asyncio.to_thread(request, port, "GET", path)).status
        except (OSError, http.client.HTTPException) as exc:
            status = type(exc).__name__
        done.append((path, status, time.perf_counter() - started))
        await asyncio.sleep(LEGIT_PAUSE_S)
    return done


async def wait_for(condition, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def site(tmp_path) -> str:
    """A gateway whose one device does not answer, its dashboard on loopback (no token)."""
    return (
        f'[gateway]\nname = "g"\nstate_dir = "{tmp_path / "state"}"\n[detection]\nenabled = false\n'
        f"[dashboard]\nenabled = true\nport = {free_port()}\n"
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {free_port()}\n'
    )


def cap_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "gatewayd.dashboard" and "connections open, its cap" in r.getMessage()
    ]


async def test_dashboard_answers_under_100_slow_connections_from_its_own_address(tmp_path, caplog):
    async with running_gateway(site(tmp_path)) as gateway:
        dashboard = gateway.dashboard
        port = dashboard.port
        assert (await asyncio.to_thread(request, port, "GET", "/api/overview")).status == 200
        fds_before = open_fds()
        attacker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            inspect.getsource(attack) + f"\nattack({port}, {ATTACKERS}, {SILENT_ATTACKERS}, {TRICKLE_S})\n",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert await asyncio.wait_for(attacker.stdout.readline(), 30) == b"ready\n"
            await wait_for(lambda: len(dashboard.app.open) >= server.MAX_CONNECTIONS, "the cap to fill")

            fds = [open_fds()]

            async def sample_fds() -> None:
                while True:
                    fds.append(open_fds())
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample_fds())
            until = asyncio.get_running_loop().time() + ATTACK_S
            try:
                clients = await asyncio.gather(legitimate_client(port, until), legitimate_client(port, until))
            finally:
                sampler.cancel()
            attacker.stdin.close()
            stats = json.loads(await asyncio.wait_for(attacker.stdout.readline(), 10))
            await asyncio.wait_for(attacker.wait(), 10)
            cut = dict(dashboard.app.cut) if hasattr(dashboard.app, "cut") else None
        finally:
            if attacker.returncode is None:
                attacker.kill()
                await attacker.wait()

    done = [r for client in clients for r in client]
    failed = [r for r in done if r[1] != 200 or r[2] > ANSWER_WITHIN_S]
    worst = max(r[2] for r in done)
    figures = (
        f"{len(done) - len(failed)} of {len(done)} requests answered 200 within {ANSWER_WITHIN_S} s, "
        f"worst {worst:.3f} s; attacker: {stats}; the server's process held "
        f"{sorted(fds)[len(fds) // 2] - fds_before} more descriptors than before the attack (median), "
        f"{max(fds) - fds_before} at most; closed by the server: {cut}"
    )
    print(figures)
    assert not failed, f"{figures}; failed: {failed[:10]}"
    assert len(done) >= 20, figures
    assert stats["connections"] > 2 * ATTACKERS and stats["answered"] == 0, figures  # closed, reopened
    # the cap holds: evicted connections are closed, not left open (a burst of newcomers accepted
    # in one turn of the loop may exceed it for that turn)
    assert sorted(fds)[len(fds) // 2] - fds_before <= server.MAX_CONNECTIONS + 4, figures
    assert cut is not None and cut["evicted"] > stats["connections"] // 2, figures
    assert len(cap_warnings(caplog)) == 1, cap_warnings(caplog)  # logged once, not per connection


async def closed_after(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """What the server sent before it closed the connection (a timeout: it did not close it)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout_s)
    except ConnectionResetError:
        return b""


async def test_the_longest_waiting_makes_room_and_a_slow_head_is_cut(tmp_path, monkeypatch, caplog):
    """With a cap of 4: three idle connections, one being answered (its store read held), then four
    newcomers: the three idle ones and the first newcomer make room in that order, the one being
    answered stays; the newcomers left are closed at the head's deadline, the answer comes after."""
    monkeypatch.setattr(server, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(server, "READ_TIMEOUT_S", 9.0)  # the held read is answered, not given up on
    reading, release = threading.Event(), threading.Event()
    store_status = views.store_status

    def held_store_status(*args):  # keeps one request being answered until the test lets it go
        reading.set()
        release.wait(30)
        return store_status(*args)

    monkeypatch.setattr(views, "store_status", held_store_status)
    async with running_gateway(site(tmp_path)) as gateway:
        app, port = gateway.dashboard.app, gateway.dashboard.port
        loop = asyncio.get_running_loop()
        streams = []
        try:
            first = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            streams += first
            await wait_for(lambda: len(app.receiving) == 3, "three connections waiting for their request")
            answered = await asyncio.open_connection("127.0.0.1", port)
            streams.append(answered)
            answered[1].write(b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await wait_for(reading.is_set, "the overview request to be answered")

            # at the cap, each newcomer closes the connection that has waited longest for its request
            later, opened_at = [], []
            for _ in range(4):
                later.append(await asyncio.open_connection("127.0.0.1", port))
                opened_at.append(loop.time())
            streams += later
            await wait_for(lambda: app.cut["evicted"] == 4, "four connections to make room")
            for reader, _ in [*first, later[0]]:
                assert await closed_after(reader, 2) == b""
            await wait_for(lambda: len(app.open) == 4, "the evicted connections' ends")
            assert not answered[0].at_eof()  # being answered: never evicted

            # the others, with a head begun and never finished, are closed at the head's deadline
            for _, writer in later[1:]:
                writer.write(b"GET / HT")
            for i, (reader, _) in enumerate(later[1:], 1):
                assert await closed_after(reader, server.HEAD_TIMEOUT_S + 2) == b""
                waited = loop.time() - opened_at[i]
                assert server.HEAD_TIMEOUT_S - 0.1 < waited < server.HEAD_TIMEOUT_S + 1, waited
            assert app.cut == {"evicted": 4, "refused": 0, "slow_request": 3, "slow_answer": 0}

            # the one being answered outlived the head's deadline and gets its answer
            release.set()
            assert (await closed_after(answered[0], 5)).startswith(b"HTTP/1.0 200 OK\r\n")
            assert len(cap_warnings(caplog)) == 1
        finally:
            release.set()
            for _, writer in streams:
                writer.close()
