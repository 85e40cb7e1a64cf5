"""A fleet of gateways catching up on the cloud endpoint at once, through the documented HTTP
API only (docs/cloud-api.md), with faults injected; every record is then read back from the
endpoint's storage to check that it was stored exactly once.

    .venv/bin/python bench/fleet.py [--gateways 1000] [--hours 24] [--only embedded|postgres]
        [--fault-rate 0.05] [--client-processes 1] [--database postgresql://postgres@127.0.0.1:5432/postgres]

Data: each simulated gateway holds `--hours` of the seed plant (3 pumps, flow, pressure, current
and temperature): a `summary` and a `health` record per minute, a few alerts (edge, model,
drift) with their escalations and closes, anomaly windows of 60-600 readings, a label or two
and a model event, keyed as the agent keys them and batched as it batches them (`--batch`
records, alerts first, gzip, Idempotency-Key from the keys). Every request body is built
before the clock starts.

Load: every gateway uploads at once (asyncio, a small HTTP/1.1 client with keep-alive when the
endpoint allows it; gateway i goes to URL i mod n), its batches in order, each until it is
answered 2xx, with the agent's backoff and its honouring of Retry-After on 429/503 and a 30 s
timeout per request. At `--fault-rate` per batch (seeded) one fault: a replay (the batch sent
again after its 2xx: it must answer duplicate), a reset (the connection aborted with an RST
once the body is sent, no answer read) or a client timeout (no answer read, the client gives
up after 0-250 ms); the last two are retried. `--client-processes` splits the gateways over
processes when one cannot drive the load; the probe's CPU is reported so that you can tell.

Targets, each started here through its CLI with a fresh data folder: (a) embedded,
`cloud-sync serve` (SQLite); (b) fleet, `cloud-sync serve --database URL --workers 2` on a
fresh database created on `--database`'s server and dropped afterwards. Figures: records stored
per second of the load's wall time, request latency p50/p99 (2xx answers, and every request
that was not a fault), 429/503 answers, retries, faults, CPU of the probe, the endpoint and the
database; lost and duplicated records from the read-back. (a) and (b) side by side with the
ratio (b)/(a); progress on stderr; the last line is a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import gzip
import hashlib
import json
import multiprocessing
import os
import queue
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import fleet_retrain

from cloud_sync import codec
from cloud_sync.uploader import paced_delay, parse_retry_after
from gatewayd.backoff import retry_delay
from tests.services import start_postgres

T0_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC: the stretch every gateway catches up on starts here
DEVICES = ("pump-1", "pump-2", "pump-3")
CHANNELS = {  # name: unit, range of a pump's level, spread within a minute relative to the level
    "flow": ("m3/h", (30.0, 60.0), 0.02),
    "pressure": ("bar", (3.0, 6.0), 0.01),
    "current": ("A", (8.0, 20.0), 0.015),
    "temperature": ("C", (35.0, 55.0), 0.004),
}
SOURCES = ("alerts", "windows", "labels", "summaries", "health")  # the agent's upload order
WINDOWS_PER_BATCH = 50  # the agent's cap (cloud_sync/uploader.py)
FAULTS = ("replay", "reset", "timeout")
GIVE_UP_S = (0.0, 0.25)  # a client timeout fault: how long the client waits before it gives up
REJECTIONS_BEFORE_GIVING_UP = 3  # 4xx other than 429: the agent would retry forever, the probe stops
TARGETS = {"embedded": "embedded (SQLite)", "postgres": "fleet (PostgreSQL)"}

Record = tuple[str, str, dict]  # key, kind, payload


@dataclass(frozen=True)
class Plan:
    gateways: int = 1000
    hours: int = 24
    batch: int = 500
    fault_rate: float = 0.05
    seed: int = 1
    client_processes: int = 1
    timeout_s: float = 30.0  # per request, as the agent's default
    max_backoff_s: float = 300.0  # the agent's default
    deadline_s: float = 3600.0  # a gateway still retrying after this gives up (its records count as lost)


def gateway_name(g: int) -> str:
    return f"gw-{g:05d}"


# -- data ------------------------------------------------------------------------------------


def gateway_events(plan: Plan, g: int) -> dict[str, list[Record]]:
    """A gateway's alerts and what follows them: escalations and closes, windows of raw readings,
    labels, a model event; outbox ids in the order the gateway queued them. Cheap, so the
    verification rebuilds them for the expected keys."""
    rng = random.Random(f"events:{plan.seed}:{g}")
    nrng = np.random.default_rng([plan.seed, g, 1])
    name = gateway_name(g)
    span_min = plan.hours * 60
    outbox: list[tuple[int, str, dict]] = []  # (time, kind, payload) before the ids are given

    def queue(at_ms: int, record_kind: str, /, **payload: object) -> None:
        outbox.append((at_ms, record_kind, payload))

    windows: list[tuple[int, dict]] = []
    alerts: list[tuple[str, str, int]] = []  # id, device, closed_ms: what labels refer to
    kinds = ["edge", "model", "drift"] + [rng.choice(("edge", "model", "drift")) for _ in range(rng.randint(0, 2))]
    for kind in kinds:
        device = rng.choice(DEVICES)
        opened = T0_MS + rng.randrange(max(1, span_min - 3)) * 60_000 + rng.randrange(60_000)
        closed = opened + rng.randint(2, 90) * 60_000
        channel = rng.choice(list(CHANNELS))
        _, (low, high), _ = CHANNELS[channel]
        if kind == "edge":
            subject, channels, severity = channel, [channel], rng.choice(("warning", "critical"))
            check = rng.choice(("bounds", "zscore", "rate"))
            detail = {"checks": [check], "value": round(rng.uniform(high, high * 1.3), 3), "source": "node"}
            closing = {
                "checks": [],
                "value": round(rng.uniform(low, high), 3),
                "source": "node",
                "closed": "the node reports the channel clear",
            }
        elif kind == "model":
            others = rng.sample([c for c in CHANNELS if c != channel], 2)
            subject, channels, severity = "model", [channel, *others], "warning"
            ratio = round(rng.uniform(1.05, 3.0), 4)
            detail = {
                "source": "models",
                "bundle": f"{device} v{rng.randint(1, 6)}",
                "ratio": ratio,
                "peak_ratio": round(ratio * rng.uniform(1.0, 1.6), 4),
                "iforest": round(rng.uniform(0.55, 0.8), 6),
                "autoencoder": round(rng.uniform(0.01, 0.2), 6),
                "ratios": {"iforest": ratio, "autoencoder": round(rng.uniform(0.5, 3.0), 4)},
                "windows": rng.randint(2, 12),
                "top_features": [
                    [f"{c}:{rng.choice(('mean', 'std', 'max'))}", round(rng.uniform(2, 9), 3)] for c in channels
                ],
                "top_channels": channels,
            }
            closing = {**detail, "windows": detail["windows"] + rng.randint(1, 30)}
        else:
            subject, channels, severity = "drift", [channel], "warning"
            detail = {
                "source": "drift",
                "changes": [[f"{channel}:mean", rng.choice(("up", "down"))]],
                "channels": [channel],
                "bundle": f"{device} v{rng.randint(1, 6)}",
                "events": rng.randint(1, 8),
                "last_change_ms": opened,
                "retrain": False,
            }
            closing = {**detail, "closed": "no drift for 30 windows"}
        alert_id = f"{name}:{device}:{subject}:{opened}"
        queue(
            opened,
            "alert",
            id=alert_id,
            device=device,
            channels=channels,
            severity=severity,
            kind=kind,
            opened_ms=opened,
            detail=detail,
        )
        if kind == "model" and rng.random() < 0.4:  # escalated half-way
            queue(
                (opened + closed) // 2, "alert_update", id=alert_id, severity="critical", closed_ms=None, detail=detail
            )
        queue(closed, "alert_update", id=alert_id, severity=None, closed_ms=closed, detail=closing)
        alerts.append((alert_id, device, closed))
        if kind != "drift":  # the raw readings kept around the anomaly
            count = rng.randint(60, 600)
            start = opened - count // 2 * 1000
            ts = start + 1000 * np.arange(count, dtype=np.int64) + nrng.integers(0, 8, count)  # poll latency
            level = rng.uniform(low, high)
            values = level + nrng.normal(0, level * 0.01, count)
            values[count // 2 :] += level * 0.15  # the step the alert was about
            values = np.round(values * 1024) / 1024  # counts of 2^-10, as the node serves them: float32-exact
            block = codec.encode_window(ts, values)
            window = {"device": device, "channel": channel, "start_ms": int(ts[0]), "end_ms": int(ts[-1])}
            windows.append((opened, {**window, "count": count, "block": block}))
    for alert_id, device, closed in rng.sample(alerts, rng.randint(1, 2)):
        created = closed + rng.randint(1, 240) * 60_000
        label = rng.choice(("true_positive", "true_positive", "false_positive"))
        operator = f"operator-{rng.randint(1, 4)}"
        queue(created, "label", alert_id=alert_id, device=device, label=label, operator=operator, created_ms=created)
    loaded = T0_MS + rng.randrange(span_min) * 60_000
    version = rng.randint(2, 7)
    queue(
        loaded, "model_event", event="loaded", name=rng.choice(DEVICES), version=version, source="cloud", ts_ms=loaded
    )
    outbox.sort(key=lambda e: e[0])
    first_id = rng.randint(1, 5000)  # the outbox has a history before this stretch
    numbered = [(f"outbox:{first_id + i}", kind, payload) for i, (_, kind, payload) in enumerate(outbox)]
    windows.sort(key=lambda w: w[0])
    first_window = rng.randint(1, 500)
    return {
        "alerts": [r for r in numbered if r[1] != "label"],
        "labels": [r for r in numbered if r[1] == "label"],
        "windows": [(f"window:{first_window + i}", "window", payload) for i, (_, payload) in enumerate(windows)],
    }


def minute_keys(plan: Plan) -> list[int]:
    return [T0_MS + 60_000 * m for m in range(plan.hours * 60)]


def gateway_keys(plan: Plan, g: int) -> list[str]:
    """Every key the gateway uploads, without building the minutes' payloads."""
    events = gateway_events(plan, g)
    minutes = minute_keys(plan)
    return (
        [k for source in ("alerts", "windows", "labels") for k, _, _ in events[source]]
        + [f"summary:{m}" for m in minutes]
        + [f"health:{m}" for m in minutes]
    )


def gateway_records(plan: Plan, g: int) -> dict[str, list[Record]]:
    """All of a gateway's records by upload source: the events, and per minute a summary of the
    3 pumps' 4 channels (a level, a daily swing, noise; 60 samples a minute) and the health."""
    rng = np.random.default_rng([plan.seed, g, 2])
    minutes = minute_keys(plan)
    n = len(minutes)
    names = list(CHANNELS)
    units = [CHANNELS[c][0] for c in names]
    low = np.array([CHANNELS[c][1][0] for c in names])
    high = np.array([CHANNELS[c][1][1] for c in names])
    spread = np.array([CHANNELS[c][2] for c in names])
    shape = (n, len(DEVICES), len(names))
    level = rng.uniform(low, high, (len(DEVICES), len(names)))
    phase = rng.uniform(0, 2 * np.pi, (len(DEVICES), len(names)))
    day = np.sin(2 * np.pi * np.arange(n)[:, None, None] / 1440 + phase) * 0.03
    mean = level * (1 + day) + rng.normal(0, 1, shape) * level * spread * 0.3
    std = np.abs(rng.normal(1, 0.2, shape)) * level * spread
    lowest = mean - std * rng.uniform(1.5, 3.0, shape)
    highest = mean + std * rng.uniform(1.5, 3.0, shape)
    last = mean + std * rng.normal(0, 1, shape)
    count = np.where(rng.random(shape[:2]) < 0.01, 59, 60)  # now and then a poll missed
    stats = np.stack([mean, std, lowest, highest, last], axis=-1).tolist()
    counts = count.tolist()
    summaries: list[Record] = []
    for i, minute in enumerate(minutes):
        devices = {}
        for d, device in enumerate(DEVICES):
            channels = {
                c: {
                    "mean": s[0],
                    "std": s[1],
                    "min": s[2],
                    "max": s[3],
                    "last": s[4],
                    "count": counts[i][d],
                    "unit": units[k],
                }
                for k, (c, s) in enumerate(zip(names, stats[i][d]))
            }
            devices[device] = codec.encode_summary(channels)
        summaries.append((f"summary:{minute}", "summary", {"minute_ms": minute, "devices": devices}))
    health: list[Record] = []
    down = {device: 0 for device in DEVICES}
    for minute in minutes:
        devices = {}
        for device in DEVICES:
            if down[device] == 0 and rng.random() < 0.002:
                down[device] = int(rng.integers(1, 10))  # a device away for a few minutes
            if down[device]:
                down[device] -= 1
                failures = int(rng.integers(3, 60))
                devices[device] = {
                    "state": "offline",
                    "consecutive_failures": failures,
                    "last_error": "ModbusIOException: no response received after 1 retries",
                }
            else:
                devices[device] = {"state": "online", "consecutive_failures": 0, "last_error": None}
        health.append((f"health:{minute}", "health", {"minute_ms": minute, "devices": devices}))
    return {**gateway_events(plan, g), "summaries": summaries, "health": health}


def agent_batches(sources: dict[str, list[Record]], size: int) -> list[list[Record]]:
    """The agent's batches after an outage: up to `size` records, highest priority first, at
    most 50 windows a batch (Uploader.next_batch)."""
    at = dict.fromkeys(SOURCES, 0)
    batches = []
    while any(at[s] < len(sources[s]) for s in SOURCES):
        batch: list[Record] = []
        for s in SOURCES:
            room = size - len(batch)
            if room <= 0:
                break
            part = sources[s][at[s] : at[s] + (min(room, WINDOWS_PER_BATCH) if s == "windows" else room)]
            at[s] += len(part)
            batch += part
        batches.append(batch)
    return batches


def batch_request(host: str, token: str, gateway: str, batch: list[Record]) -> tuple[bytes, int]:
    """The whole HTTP request as the agent sends a batch; returns it and the body's size."""
    batch_id = "b:" + hashlib.sha256("\n".join(k for k, _, _ in batch).encode()).hexdigest()[:40]
    records = [{"key": k, "kind": kind, "payload": p} for k, kind, p in batch]
    body = gzip.compress(json.dumps({"gateway": gateway, "records": records}).encode(), 6, mtime=0)
    head = (
        f"POST /v1/batches HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Encoding: gzip\r\nIdempotency-Key: {batch_id}\r\n"
        f"Content-Length: {len(body)}\r\nUser-Agent: fleet-bench\r\n\r\n"
    ).encode()
    return head + body, len(body)


@dataclass
class GatewayLoad:
    name: str
    host: str
    port: int
    requests: list[bytes]
    records: list[int]


# -- the client ------------------------------------------------------------------------------


class NoAnswer(ConnectionError):
    """The connection ended before a status line."""


class Connection:
    """One gateway's connection: kept open while the endpoint allows, reopened when not."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.stale = 0  # kept-alive connections found closed by the endpoint, request sent again at once

    def close(self, reset: bool = False) -> None:
        if self.writer is not None:
            if reset:
                sock = self.writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.writer.transport.abort()
            else:
                self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, request: bytes, fault: str | None, give_up_s: float) -> tuple[int, dict, bytes] | None:
        """Send a request and read its answer; None when a fault left the answer unread."""
        for _ in range(2):
            reused = self.writer is not None
            if not reused:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                self.writer.transport.set_write_buffer_limits(high=0)  # drain() returns once the kernel has it all
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(request)
                await self.writer.drain()
                if fault == "reset":
                    await self._sent()
                    self.close(reset=True)
                    return None
                if fault == "timeout":
                    await asyncio.sleep(give_up_s)
                    self.close()
                    return None
                return await self._answer()
            except (NoAnswer, ConnectionResetError, BrokenPipeError):
                self.close()
                if not reused:
                    raise
                self.stale += 1
        raise NoAnswer("kept-alive connection closed twice")

    async def _sent(self) -> None:
        """Wait until the kernel has delivered every byte (an RST would drop what it still holds)."""
        assert self.writer is not None
        fd = self.writer.get_extra_info("socket").fileno()
        while struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]:
            await asyncio.sleep(0.001)

    async def _answer(self) -> tuple[int, dict, bytes]:
        assert self.reader is not None
        line = await self.reader.readline()
        if not line:
            raise NoAnswer("connection closed before an answer")
        version, status = line.split(None, 2)[:2]
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                body += await self.reader.readexactly(size)
                await self.reader.readline()
            await self.reader.readline()
        else:
            body = await self.reader.read()
            headers["connection"] = "close"
        keep = headers.get("connection", "").lower()
        if keep == "close" or (version == b"HTTP/1.0" and keep != "keep-alive"):
            self.close()
        return int(status), headers, body


@dataclass
class Stats:
    """One client process's counts; latencies in seconds."""

    latency_ok: list[float] = field(default_factory=list)
    latency_all: list[float] = field(default_factory=list)
    requests: int = 0
    batches_ok: int = 0
    records_acked: int = 0
    status_429: int = 0
    status_503: int = 0
    status_5xx: int = 0
    rejected: int = 0  # other 4xx
    connection_errors: int = 0
    timeouts: int = 0  # no answer within timeout_s
    retries: int = 0
    backoff_s: float = 0.0  # gateway-seconds spent waiting to retry (backoff, Retry-After)
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    replays_duplicate: int = 0
    replays_not_duplicate: int = 0
    stale_connections: int = 0
    gave_up: int = 0  # gateways that stopped before their last batch
    first_error: str = ""
    cpu_s: float = 0.0
    started: float = 0.0
    ended: float = 0.0


class GiveUp(Exception):
    pass


async def send_until_2xx(
    conn: Connection, request: bytes, fault: str | None, plan: Plan, stats: Stats, rng: random.Random, deadline: float
) -> dict:
    """The agent's loop for one batch: retried until a 2xx, with its backoff; `fault` on the first try."""
    failures = rejections = 0
    attempt = 0
    while True:
        if attempt:
            stats.retries += 1
        inject = fault if attempt == 0 else None
        attempt += 1
        stats.requests += 1
        t0 = time.monotonic()
        answer = None
        wait_at_least = None
        try:
            async with asyncio.timeout(plan.timeout_s):
                answer = await conn.exchange(request, inject, rng.uniform(*GIVE_UP_S))
        except TimeoutError:
            conn.close()
            stats.timeouts += 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            conn.close()
            stats.connection_errors += 1
            stats.first_error = stats.first_error or f"{exc.__class__.__name__}: {exc}"
        elapsed = time.monotonic() - t0
        if inject is None:
            stats.latency_all.append(elapsed)
        if answer is not None:
            status, headers, body = answer
            if 200 <= status < 300:
                stats.latency_ok.append(elapsed)
                try:
                    return json.loads(body)
                except ValueError:
                    return {}
            if status in (429, 503):
                setattr(stats, f"status_{status}", getattr(stats, f"status_{status}") + 1)
                wait_at_least = parse_retry_after(headers.get("retry-after"))
            elif status >= 500:
                stats.status_5xx += 1
            else:
                stats.rejected += 1
                rejections += 1
                stats.first_error = stats.first_error or f"HTTP {status}: {body[:200]!r}"
                if rejections >= REJECTIONS_BEFORE_GIVING_UP:
                    raise GiveUp
        if wait_at_least is not None:  # as the agent: the endpoint's pacing, no backoff on top
            delay = paced_delay(wait_at_least)
        else:
            failures += 1
            delay = retry_delay(failures, first_s=1.0, max_s=plan.max_backoff_s, rng=rng)
        if time.monotonic() + delay > deadline:
            raise GiveUp
        stats.backoff_s += delay
        await asyncio.sleep(delay)


async def upload_gateway(load: GatewayLoad, g: int, plan: Plan, stats: Stats, deadline: float) -> None:
    faults = random.Random(f"faults:{plan.seed}:{g}")  # drawn once per batch: the same faults on every target
    rng = random.Random(f"timing:{plan.seed}:{g}")  # backoff jitter, give-up times
    conn = Connection(load.host, load.port)
    try:
        for request, records in zip(load.requests, load.records):
            fault = faults.choice(FAULTS) if faults.random() < plan.fault_rate else None
            if fault:
                stats.faults[fault] += 1
            answer = await send_until_2xx(
                conn, request, None if fault == "replay" else fault, plan, stats, rng, deadline
            )
            stats.batches_ok += 1
            stats.records_acked += records
            if fault == "replay":
                again = await send_until_2xx(conn, request, None, plan, stats, rng, deadline)
                if again.get("duplicate") is True and again.get("accepted") == 0:
                    stats.replays_duplicate += 1
                else:
                    stats.replays_not_duplicate += 1
                    stats.first_error = stats.first_error or f"replay answered {again} (answer before: {answer})"
    except GiveUp:
        stats.gave_up += 1
    finally:
        stats.stale_connections += conn.stale
        conn.close()


async def drive(loads: list[tuple[int, GatewayLoad]], plan: Plan, index: int) -> Stats:
    stats = Stats(started=time.monotonic())
    cpu0 = time.process_time()
    deadline = stats.started + plan.deadline_s
    total = sum(len(load.requests) for _, load in loads)

    async def progress() -> None:
        while True:
            await asyncio.sleep(10)
            print(
                f"  client {index}: {stats.batches_ok}/{total} batches stored, {stats.retries} retries, "
                f"{stats.status_429 + stats.status_503} throttled, {time.monotonic() - stats.started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    reporter = asyncio.create_task(progress())
    await asyncio.gather(*(upload_gateway(load, g, plan, stats, deadline) for g, load in loads))
    reporter.cancel()
    stats.ended = time.monotonic()
    stats.cpu_s = time.process_time() - cpu0
    return stats


def client_process(
    index: int,
    urls: list[str],
    tokens: dict[str, str],
    plan: Plan,
    ready: multiprocessing.Queue,
    start: multiprocessing.synchronize.Event,
    results: multiprocessing.Queue,
) -> None:
    """One client process: builds its gateways' requests, waits for the start, drives them."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a connection per gateway
    cpu0, t0, shown = time.process_time(), time.monotonic(), time.monotonic()
    mine = range(index, plan.gateways, plan.client_processes)
    loads = []
    records = body_bytes = 0
    for n, g in enumerate(mine):
        url = urlsplit(urls[g % len(urls)])
        name = gateway_name(g)
        requests, counts = [], []
        for batch in agent_batches(gateway_records(plan, g), plan.batch):
            request, size = batch_request(url.netloc, tokens[name], name, batch)
            requests.append(request)
            counts.append(len(batch))
            body_bytes += size
        records += sum(counts)
        loads.append((g, GatewayLoad(name, url.hostname or "127.0.0.1", url.port or 80, requests, counts)))
        if time.monotonic() - shown > 10:
            shown = time.monotonic()
            print(
                f"  client {index}: built {n + 1}/{len(mine)} gateways' requests, {shown - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    batches = sum(len(load.requests) for _, load in loads)
    ready.put(
        {
            "records": records,
            "batches": batches,
            "body_bytes": body_bytes,
            "build_s": time.monotonic() - t0,
            "build_cpu_s": time.process_time() - cpu0,
        }
    )
    start.wait()
    results.put(asdict(asyncio.run(drive(loads, plan, index))))


def _collect(q: multiprocessing.Queue, procs: list, check: Callable[[], None] | None) -> dict:
    """The next message of any client process, watching that the clients and the target live."""
    while True:
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"client process exited with {dead[0].exitcode}") from None
            if check is not None:
                check()


def run_load(
    urls: list[str],
    tokens: dict[str, str],
    plan: Plan,
    *,
    check: Callable[[], None] | None = None,
    cpu: Callable[[], dict[str, float]] | None = None,
) -> dict:
    """Drives the fleet against endpoints already serving `urls` (gateway i to URL i mod n).
    `check` raises when the target has died; `cpu` returns its parts' CPU seconds so far,
    read when the clock starts and stops. Returns the load's figures (no read-back)."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=client_process, args=(i, urls, tokens, plan, ready, start, results), daemon=True)
        for i in range(plan.client_processes)
    ]
    try:
        for p in procs:
            p.start()
        built = [_collect(ready, procs, check) for _ in procs]
        cpu_before = cpu() if cpu else {}
        own0 = time.process_time()
        t0 = time.monotonic()
        start.set()
        parts = [_collect(results, procs, check) for _ in procs]
        wall = max(p["ended"] for p in parts) - t0
        cpu_after = cpu() if cpu else {}
        own = time.process_time() - own0
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    ok = np.array([x for p in parts for x in p["latency_ok"]]) * 1000
    every = np.array([x for p in parts for x in p["latency_all"]]) * 1000

    def pct(a: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(a, q)), 1) if len(a) else None

    def total(name: str) -> int:
        return sum(p[name] for p in parts)

    probe_cpu = sum(p["cpu_s"] for p in parts) + own
    return {
        "records": sum(b["records"] for b in built),
        "batches": sum(b["batches"] for b in built),
        "body_bytes": sum(b["body_bytes"] for b in built),
        "build_s": round(max(b["build_s"] for b in built), 1),
        "build_cpu_s": round(sum(b["build_cpu_s"] for b in built), 1),
        "wall_s": round(wall, 3),
        "records_acked": total("records_acked"),
        "records_acked_per_s": round(total("records_acked") / wall, 1),
        "p50_ms": pct(ok, 50),
        "p99_ms": pct(ok, 99),
        "p50_all_ms": pct(every, 50),
        "p99_all_ms": pct(every, 99),
        "max_ms": round(float(every.max()), 1) if len(every) else None,
        "requests": total("requests"),
        "status_429": total("status_429"),
        "status_503": total("status_503"),
        "status_5xx": total("status_5xx"),
        "rejected": total("rejected"),
        "connection_errors": total("connection_errors"),
        "timeouts": total("timeouts"),
        "retries": total("retries"),
        "backoff_share": round(sum(p["backoff_s"] for p in parts) / (plan.gateways * wall), 3),
        "faults": {f: sum(p["faults"][f] for p in parts) for f in FAULTS},
        "replays_duplicate": total("replays_duplicate"),
        "replays_not_duplicate": total("replays_not_duplicate"),
        "stale_connections": total("stale_connections"),
        "gave_up": total("gave_up"),
        "first_error": next((p["first_error"] for p in parts if p["first_error"]), ""),
        "probe_cpu_s": round(probe_cpu, 2),
        "probe_cores": round(probe_cpu / wall, 2),
        "probe_busiest_process": round(max(p["cpu_s"] / (p["ended"] - p["started"]) for p in parts), 2),
        "target_cpu_s": {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after},
    }


# -- the targets -----------------------------------------------------------------------------


def cli() -> tuple[list[str], dict[str, str]]:
    """`cloud-sync` as the tree this file sits in has it, and the environment to run it with."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return [sys.executable, "-m", "cloud_sync"], env


def issue_tokens(data_dir: Path, gateways: list[str], database: str | None) -> dict[str, str]:
    """A bearer token per gateway, issued as `cloud-sync token` issues them, before the endpoint
    starts (one subprocess per token would take minutes for a fleet)."""
    from cloud_sync.server import open_parts

    storage, _, tokens = open_parts(data_dir, database)
    try:
        return {gw: tokens.issue(gw) for gw in gateways}
    finally:
        storage.close()


def open_storage(data_dir: Path, database: str | None):
    """The endpoint's storage as cloud_sync opens it: `.records(gateway)` and `.close()`."""
    from cloud_sync.storage import open_storage as open_endpoint_storage

    return open_endpoint_storage(data_dir, database)


def verify(plan: Plan, data_dir: Path, database: str | None) -> dict:
    """Every generated record stored exactly once: the keys read back per gateway against those
    generated; the first and the last gateway's payloads compared in full too."""
    sample = {0, plan.gateways - 1}
    lost = duplicated = unexpected = mismatched = stored_rows = 0
    storage = open_storage(data_dir, database)
    try:
        for g in range(plan.gateways):
            expected = gateway_keys(plan, g)
            assert len(set(expected)) == len(expected), "generated keys must be unique"
            rows = storage.records(gateway_name(g))
            keys = [r["key"] for r in rows]
            stored_rows += len(keys)
            found = set(keys)
            lost += len(set(expected) - found)
            duplicated += len(keys) - len(found)
            unexpected += len(found - set(expected))
            if g in sample:
                want = {k: p for records in gateway_records(plan, g).values() for k, _, p in records}
                mismatched += sum(1 for r in rows if r["key"] in want and r["payload"] != want[r["key"]])
    finally:
        storage.close()
    return {
        "stored_rows": stored_rows,
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "payload_mismatches_sampled": mismatched,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree_cpu_s(root: int) -> float:
    """CPU seconds of a process and its live descendants (uvicorn's workers, PostgreSQL's backends)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
            times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(children)
        frontier += children
    return sum(times.get(p, 0.0) for p in tree)


class Server:
    """`cloud-sync serve` in a subprocess of its own session, ready once /v1/health answers."""

    def __init__(self, data_dir: Path, database: str | None, workers: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "serve.log"
        command, env = cli()
        command += ["serve", "--data", str(data_dir), "--port", str(self.port)]
        if database is not None:
            command += ["--database", database, "--workers", str(workers)]
        self.command = command
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{' '.join(self.command)} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            self.check()
            try:
                with urllib.request.urlopen(f"{self.url}/v1/health", timeout=1) as answer:
                    if answer.status == 200 and json.loads(answer.read()).get("ok") is True:
                        return time.monotonic() - t0
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.url}/v1/health did not answer in {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the session started for it above
                self.proc.wait()


class Database:
    """A fresh database on the server of `admin_url`, dropped afterwards."""

    def __init__(self, admin_url: str):
        import psycopg

        self.admin_url = admin_url
        self.name = f"fleet_bench_{os.getpid()}_{int(time.time())}"
        self.url = urlsplit(admin_url)._replace(path="/" + self.name).geturl()
        self.postmaster: int | None = None  # to count the cluster's CPU, when it runs here
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
            try:
                data_dir = conn.execute("SHOW data_directory").fetchone()[0]  # superusers only
                self.postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
            except (psycopg.Error, OSError, ValueError, IndexError, TypeError):
                pass

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def run_target(target: str, plan: Plan, args: argparse.Namespace) -> dict:
    """Start the target through its CLI on a fresh folder (and database), drive the fleet, stop
    it, read everything back."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"fleet-{target}-") as tmp:
        data_dir = Path(tmp)
        db = Database(args.database) if target == "postgres" else None
        try:
            gateways = [gateway_name(g) for g in range(plan.gateways)]
            tokens = issue_tokens(data_dir, gateways, db.url if db else None)
            tokens_s = time.monotonic() - t0
            server = Server(data_dir, db.url if db else None, args.workers)
            try:
                ready_s = server.wait_ready()
                print(
                    f"{target}: {len(tokens)} tokens in {tokens_s:.1f} s, endpoint ready in {ready_s:.2f} s "
                    f"(cloud-sync {' '.join(server.command[3:])})",
                    file=sys.stderr,
                    flush=True,
                )

                def cpu() -> dict[str, float]:
                    parts = {"endpoint": process_tree_cpu_s(server.proc.pid)}
                    if db is not None and db.postmaster is not None:
                        parts["database"] = process_tree_cpu_s(db.postmaster)
                    return parts

                figures = run_load([server.url], tokens, plan, check=server.check, cpu=cpu)
            finally:
                server.stop()
            print(
                f"{target}: built in {figures['build_s']:.1f} s, load {figures['wall_s']:.1f} s; reading back",
                file=sys.stderr,
                flush=True,
            )
            v0 = time.monotonic()
            figures |= verify(plan, data_dir, db.url if db else None)
            figures["verify_s"] = round(time.monotonic() - v0, 1)
        finally:
            if db is not None:
                db.drop()
    figures["records_per_s"] = round((figures["records"] - figures["lost"]) / figures["wall_s"], 1)
    figures["total_s"] = round(time.monotonic() - t0, 1)
    return figures


# -- report ----------------------------------------------------------------------------------


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def report(plan: Plan, results: dict[str, dict], workers: int) -> None:
    a, b = results.get("embedded"), results.get("postgres")
    first = a or b
    assert first is not None
    cores = os.cpu_count() or 1
    print(
        f"fleet: {plan.gateways} gateways x {plan.hours} h = {first['records']:,} records in {first['batches']:,} "
        f"batches of <= {plan.batch} ({first['body_bytes'] / 1e6:,.1f} MB gzip), faults at {plan.fault_rate:g} per "
        f"batch, {plan.client_processes} client process(es), {cores} cores"
    )

    def get(r: dict | None, key: str) -> object:
        if r is None:
            return None
        if key.startswith("cpu:"):
            return r["target_cpu_s"].get(key[4:])
        if key.startswith("cpu_us:"):
            used = r["target_cpu_s"].get(key[7:])
            return None if used is None else 1e6 * used / r["records"]
        if key.startswith("fault:"):
            return r["faults"][key[6:]]
        return r[key]

    rows = [
        ("records stored / s (load wall time)", "records_per_s"),
        ("load wall time (s)", "wall_s"),
        ("latency p50, 2xx (ms)", "p50_ms"),
        ("latency p99, 2xx (ms)", "p99_ms"),
        ("latency p50, every request (ms)", "p50_all_ms"),
        ("latency p99, every request (ms)", "p99_all_ms"),
        ("latency max (ms)", "max_ms"),
        ("requests", "requests"),
        ("429 answers", "status_429"),
        ("503 answers", "status_503"),
        ("other 5xx answers", "status_5xx"),
        ("connection errors", "connection_errors"),
        ("timeouts (30 s)", "timeouts"),
        ("retries", "retries"),
        ("share of gateway-time backing off", "backoff_share"),
        ("faults: replays", "fault:replay"),
        ("faults: resets", "fault:reset"),
        ("faults: client timeouts", "fault:timeout"),
        ("replays answered duplicate", "replays_duplicate"),
        ("replays not answered duplicate", "replays_not_duplicate"),
        ("records lost", "lost"),
        ("records duplicated", "duplicated"),
        ("payloads differing (2 gateways)", "payload_mismatches_sampled"),
        ("probe CPU-s during the load", "probe_cpu_s"),
        ("probe cores (busiest process)", "probe_busiest_process"),
        ("endpoint CPU-s", "cpu:endpoint"),
        ("database CPU-s", "cpu:database"),
        ("endpoint CPU-us per record", "cpu_us:endpoint"),
        ("database CPU-us per record", "cpu_us:database"),
    ]
    b_head = f"{TARGETS['postgres']}, {workers} workers"
    print(f"  {'':<36} {TARGETS['embedded']:>20} {b_head:>34} {'(b)/(a)':>9}")
    for label, key in rows:
        va, vb = get(a, key), get(b, key)
        ratio = f"{vb / va:.2f}" if isinstance(va, int | float) and isinstance(vb, int | float) and va else "-"
        print(f"  {label:<36} {_cell(va):>20} {_cell(vb):>34} {ratio:>9}")
    for name, r in results.items():
        busy = r["target_cpu_s"]
        parts = ", ".join(f"{k} {v / r['wall_s']:.2f}" for k, v in busy.items())
        print(
            f"  {name}: cores busy over the load: probe {r['probe_cores']:.2f}, {parts} (of {cores}); "
            f"requests built in {r['build_s']:.1f} s, read back in {r['verify_s']:.1f} s, {r['total_s']:.0f} s in all"
        )
        if r["probe_busiest_process"] > 0.8:
            print(f"  {name}: a client process was busy {r['probe_busiest_process']:.0%}: the probe may be the limit")
        if r["first_error"]:
            print(f"  {name}: first error: {r['first_error']}")
        if r["gave_up"]:
            print(f"  {name}: {r['gave_up']} gateways gave up before their last batch")
        if r["stale_connections"]:
            print(f"  {name}: {r['stale_connections']} kept-alive connections found closed, request sent on a new one")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=24, help="hours of records per gateway (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=500, help="records per batch (default: %(default)s)")
    parser.add_argument("--fault-rate", type=float, default=0.05, help="faults per batch (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--only", choices=list(TARGETS), help="one target only (default: both)")
    parser.add_argument(
        "--database",
        help="a PostgreSQL server to create the fleet target's throwaway database on "
        "(default: a server of the bench's own, started from Debian's binaries in a temporary folder)",
    )
    parser.add_argument(
        "--retrain-scopes",
        type=int,
        default=1000,
        help="device scopes retrained with one and two worker processes (0: skip; default: %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=2, help="the fleet endpoint's worker processes")
    parser.add_argument("--deadline-s", type=float, default=3600.0, help="gateways still retrying after this give up")
    args = parser.parse_args(argv)
    plan = Plan(
        gateways=args.gateways,
        hours=args.hours,
        batch=args.batch,
        fault_rate=args.fault_rate,
        seed=args.seed,
        client_processes=args.client_processes,
        deadline_s=args.deadline_s,
    )
    own_postgres = None
    if args.database is None and args.only != "embedded":
        own_postgres = start_postgres(Path(tempfile.mkdtemp(prefix="fleet-postgres-")))
        args.database = own_postgres.url
    try:
        results = {target: run_target(target, plan, args) for target in ([args.only] if args.only else TARGETS)}
    finally:
        if own_postgres is not None:
            own_postgres.stop()
    report(plan, results, args.workers)
    a, b = results.get("embedded"), results.get("postgres")

    def fig(r: dict | None, key: str) -> object:
        return None if r is None else r[key]

    figures = {
        "gateways": plan.gateways,
        "hours": plan.hours,
        "records": next(iter(results.values()))["records"],
        "batches": next(iter(results.values()))["batches"],
        "fault_rate": plan.fault_rate,
        "client_processes": plan.client_processes,
        "records_per_s_embedded": fig(a, "records_per_s"),
        "records_per_s_postgres": fig(b, "records_per_s"),
        "records_per_s_ratio": round(b["records_per_s"] / a["records_per_s"], 3) if a and b else None,
        "p50_ms_embedded": fig(a, "p50_ms"),
        "p99_ms_embedded": fig(a, "p99_ms"),
        "p99_all_ms_embedded": fig(a, "p99_all_ms"),
        "p50_ms_postgres": fig(b, "p50_ms"),
        "p99_ms_postgres": fig(b, "p99_ms"),
        "p99_all_ms_postgres": fig(b, "p99_all_ms"),
        "throttled_embedded": None if a is None else a["status_429"] + a["status_503"],
        "throttled_postgres": None if b is None else b["status_429"] + b["status_503"],
        "retries_embedded": fig(a, "retries"),
        "retries_postgres": fig(b, "retries"),
        "faults": next(iter(results.values()))["faults"],
        "replays_not_duplicate": sum(r["replays_not_duplicate"] for r in results.values()),
        "lost": sum(r["lost"] for r in results.values()),
        "duplicated": sum(r["duplicated"] for r in results.values()),
        "unexpected": sum(r["unexpected"] for r in results.values()),
        "payload_mismatches_sampled": sum(r["payload_mismatches_sampled"] for r in results.values()),
        "probe_cpu_s_embedded": fig(a, "probe_cpu_s"),
        "probe_cpu_s_postgres": fig(b, "probe_cpu_s"),
        "endpoint_cpu_s_embedded": None if a is None else a["target_cpu_s"].get("endpoint"),
        "endpoint_cpu_s_postgres": None if b is None else b["target_cpu_s"].get("endpoint"),
        "database_cpu_s_postgres": None if b is None else b["target_cpu_s"].get("database"),
        "wall_s_embedded": fig(a, "wall_s"),
        "wall_s_postgres": fig(b, "wall_s"),
    }
    # Retraining on the fleet endpoint's database and queue, one worker process against two.
    if args.retrain_scopes:
        retraining = fleet_retrain.measure(args.retrain_scopes, minutes=240)
        fleet_retrain.report(retraining)
        figures |= retraining
    else:
        figures["retrain_scaling_2_workers"] = None
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
