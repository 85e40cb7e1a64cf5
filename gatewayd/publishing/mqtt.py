"""Publishing to an MQTT broker with aiomqtt. Topics and payloads: docs/mqtt.md.

Acquisition never waits for the broker: messages go into a bounded in-memory queue; while the
broker is away they are moved into SQLite (bounded, oldest unimportant first out) and published
after the next connect, oldest first. Reconnects back off exponentially with jitter."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiomqtt

from gatewayd.alerts.alert import Alert, AlertChange
from gatewayd.backoff import retry_delay
from gatewayd.clock import now_ms
from gatewayd.config import MqttSection
from gatewayd.publishing import home_assistant
from gatewayd.store.faults import StoreFault

log = logging.getLogger(__name__)

SCHEMA = 1
QUEUE_MESSAGES = 10_000
HELD_MESSAGES = 10_000
COMMANDS_QUEUED = 100  # received commands waiting to be handled; past it the client drops them
MAX_BACKOFF_S = 60.0


class MessageBacklog(Protocol):
    """Where messages wait while the broker is away (the store: gatewayd/store/async_store.py)."""

    async def backlog_push(self, messages: Sequence[tuple[str, bytes, int, bool, bool]], limit: int) -> int: ...

    async def backlog_take(self, limit: int) -> list[tuple[int, str, bytes, int, bool]]: ...

    async def backlog_delete(self, ids: Sequence[int]) -> None: ...


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    important: bool = False  # kept before routine messages when the backlog is full


class Topics:
    def __init__(self, prefix: str, gateway: str):
        self.base = f"{prefix.rstrip('/')}/{gateway}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    def telemetry(self, device: str) -> str:
        return f"{self.base}/telemetry/{device}"

    def health(self, device: str) -> str:
        return f"{self.base}/health/{device}"

    def summary(self, device: str) -> str:
        return f"{self.base}/summary/{device}"

    @property
    def alerts(self) -> str:
        return f"{self.base}/alerts"

    @property
    def commands(self) -> str:
        return f"{self.base}/command"

    @property
    def command_results(self) -> str:
        return f"{self.base}/command/result"


def encode(body: dict) -> bytes:
    return json.dumps({"schema": SCHEMA, **body}, separators=(",", ":"), sort_keys=True).encode()


class Publisher:
    def __init__(
        self,
        config: MqttSection,
        gateway: str,
        backlog: MessageBacklog,
        on_command: Callable[[bytes, bool], Awaitable[str]] | None = None,
    ):
        self.on_command = on_command
        self.config = config
        self.topics = Topics(config.topic_prefix, gateway)
        self.gateway = gateway
        self.backlog = backlog
        self.queue: asyncio.Queue[Message] = asyncio.Queue(QUEUE_MESSAGES)
        self.connected = False
        self.published = 0
        self.dropped = 0  # routine messages refused by a full in-memory queue
        self.backlogged = 0
        self.failures = 0
        self.store_state: dict | None = None
        self.announced_gateway = False
        self.devices: set[str] = set()  # whose health was published: set offline at a clean stop
        self.held: deque[Message] = deque(maxlen=HELD_MESSAGES)  # important ones, neither broker nor store

    # -- what the daemon offers -----------------------------------------------------------

    def offer(self, message: Message) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    def telemetry(self, device: str, ts_ms: int, values: dict[str, float], units: dict[str, str]) -> None:
        if self.config.telemetry == "readings":
            body = {"device": device, "ts_ms": ts_ms, "values": values, "units": units}
            self.offer(Message(self.topics.telemetry(device), encode(body)))

    def summary(self, device: str, minute_ms: int, channels: dict[str, dict]) -> None:
        if self.config.telemetry == "summaries":
            body = {"device": device, "minute_ms": minute_ms, "channels": channels}
            self.offer(Message(self.topics.summary(device), encode(body), qos=1))

    def discovery(
        self,
        device: str,
        units: dict[str, str],
        *,
        bits: frozenset[str] = frozenset(),
        classes: dict[str, str] | None = None,
    ) -> None:
        """Home Assistant MQTT discovery (publishing/home_assistant.py): the gateway as a device,
        and one retained entity config per channel of this device."""
        if not self.config.home_assistant:
            return
        if not self.announced_gateway:
            self._discovery(*home_assistant.gateway_config(self.gateway, self.topics.status))
            self.announced_gateway = True
        for channel, unit in units.items():
            self._discovery(
                *home_assistant.channel_config(
                    self.gateway,
                    device,
                    channel,
                    unit,
                    telemetry_topic=self.topics.telemetry(device),
                    status_topic=self.topics.status,
                    health_topic=self.topics.health(device),
                    bit=channel in bits,
                    device_class=(classes or {}).get(channel),
                )
            )

    def _discovery(self, topic: str, body: dict) -> None:
        payload = json.dumps(body, sort_keys=True, ensure_ascii=False).encode()
        self.offer(Message(f"{self.config.discovery_prefix}/{topic}", payload, qos=1, retain=True, important=True))

    def health(self, device: str, state: str, failures: int, last_error: str | None) -> None:
        self.devices.add(device)
        self.offer(
            Message(
                self.topics.health(device),
                self._health(device, state, failures, last_error),
                qos=1,
                retain=True,
                important=True,
            )
        )

    def _health(self, device: str, state: str, failures: int, last_error: str | None) -> bytes:
        body = {"device": device, "state": state, "consecutive_failures": failures, "last_error": last_error}
        return encode({**body, "ts_ms": now_ms()})

    def alert(self, alert: Alert | AlertChange) -> None:
        self.offer(Message(self.topics.alerts, encode(alert.message()), qos=1, important=True))

    # -- the connection -------------------------------------------------------------------

    def store_health(self, state: str, last_error: str | None) -> None:
        """The store's state (ok, or what is wrong with the disk) goes out with the gateway's
        retained status, now and at every reconnect."""
        self.store_state = {"state": state, "last_error": last_error}
        self.offer(Message(self.topics.status, self._status("online"), qos=1, retain=True, important=True))

    def _status(self, state: str, *, will: bool = False) -> bytes:
        """The retained status. The last will has no time: the broker delivers it whenever the
        gateway dies, so any time written at connect would be wrong by the whole uptime."""
        body: dict = {"gateway": self.gateway, "state": state}
        if not will:
            body["ts_ms"] = now_ms()
        if state == "online" and self.store_state is not None:
            body["store"] = self.store_state
        return encode(body)

    def _client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(self.topics.status, self._status("offline", will=True), qos=1, retain=True)
        return broker_client(self.config, f"gatewayd-{self.gateway}", will, queued_incoming=COMMANDS_QUEUED)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pending: Message | None = None
            try:
                async with self._client() as client:
                    self.connected = True
                    if self.failures:
                        log.info(
                            "MQTT broker %s:%d back after %d failed attempts",
                            self.config.host,
                            self.config.port,
                            self.failures,
                        )
                    self.failures = 0
                    await client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
                    commands = None
                    if self.on_command is not None:
                        await client.subscribe(self.topics.commands, qos=1)
                        commands = asyncio.create_task(self._commands(client), name="mqtt-commands")
                    try:
                        await self._drain_backlog(client)
                        while not stop.is_set():
                            if commands is not None and commands.done():
                                commands.result()  # the connection broke under it: reconnect
                            try:
                                pending = await asyncio.wait_for(self.queue.get(), 0.5)
                            except TimeoutError:
                                continue
                            await client.publish(pending.topic, pending.payload, qos=pending.qos, retain=pending.retain)
                            self.published += 1
                            pending = None
                        # A clean stop: no device is polled any more, and the retained health says so.
                        for device in sorted(self.devices):
                            gone = self._health(device, "offline", 0, "the gateway stopped: not polled")
                            await client.publish(self.topics.health(device), gone, qos=1, retain=True)
                        await client.publish(self.topics.status, self._status("offline"), qos=1, retain=True)
                    finally:
                        if commands is not None:
                            commands.cancel()
                            await asyncio.gather(commands, return_exceptions=True)
            except (aiomqtt.MqttError, OSError) as exc:
                self.connected = False
                self.failures += 1
                if self.failures == 1:
                    log.error(
                        "MQTT broker %s:%d unavailable: %s; keeping messages in the store",
                        self.config.host,
                        self.config.port,
                        exc,
                    )
                await self._to_backlog(pending)
                delay = retry_delay(self.failures, first_s=1.0, max_s=MAX_BACKOFF_S)
                deadline = asyncio.get_running_loop().time() + delay
                while not stop.is_set() and asyncio.get_running_loop().time() < deadline:
                    await self._to_backlog(None)  # keep the in-memory queue empty while offline
                    try:
                        await asyncio.wait_for(stop.wait(), 1.0)
                    except TimeoutError:
                        pass
        self.connected = False
        await self._to_backlog(None)  # what was not published survives a restart

    async def _commands(self, client: aiomqtt.Client) -> None:
        """One result per command message. `on_command` contains its own failures; should a bug
        still raise, it is logged here and the loop goes on: only the connection ends it."""
        assert self.on_command is not None
        async for message in client.messages:
            try:
                payload = (
                    bytes(message.payload)
                    if isinstance(message.payload, bytes | bytearray)
                    else str(message.payload).encode()
                )
                result = await self.on_command(payload, bool(message.retain))
            except Exception:
                log.exception("MQTT command on %s not handled", message.topic)
                result = "error: internal error while handling the command; see the gateway's log"
            self.offer(Message(self.topics.command_results, encode({"result": result}), qos=1, important=True))

    async def _to_backlog(self, first: Message | None) -> None:
        messages = list(self.held) + ([first] if first is not None else [])
        self.held.clear()
        while not self.queue.empty():
            messages.append(self.queue.get_nowait())
        if messages:
            rows = [(m.topic, m.payload, m.qos, m.retain, m.important) for m in messages]
            try:
                await self.backlog.backlog_push(rows, self.config.backlog_messages)
            except StoreFault:
                # Neither broker nor store: alerts and health wait in memory (bounded), the rest goes.
                important = [m for m in messages if m.important]
                self.dropped += len(messages) - len(important)
                self.held.extend(important)
                return
            self.backlogged += len(messages)

    async def _drain_backlog(self, client: aiomqtt.Client) -> None:
        while self.held:  # kept in memory while the store was down too
            m = self.held[0]
            await client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
            self.held.popleft()
            self.published += 1
        while True:
            try:
                rows = await self.backlog.backlog_take(500)
                if not rows:
                    return
                for _, topic, payload, qos, retain in rows:
                    await client.publish(topic, payload, qos=qos, retain=retain)
                    self.published += 1
                await self.backlog.backlog_delete([r[0] for r in rows])
            except StoreFault:
                return  # the backlog waits on the disk; live messages go on


def broker_client(
    cfg: MqttSection, identifier: str, will: aiomqtt.Will, *, queued_incoming: int = COMMANDS_QUEUED
) -> aiomqtt.Client:
    """A connection to the [mqtt] broker: its credentials (the password from its file), TLS when
    a CA is given, this client's last will."""
    password = Path(cfg.password_file).read_text().strip() if cfg.password_file else None
    tls = ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else None
    return aiomqtt.Client(
        cfg.host,
        cfg.port,
        username=cfg.username,
        password=password,
        tls_context=tls,
        will=will,
        keepalive=cfg.keepalive_s,
        identifier=identifier,
        timeout=10,
        max_queued_incoming_messages=queued_incoming,
    )
