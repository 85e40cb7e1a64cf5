"""The gateway as a Sparkplug B edge node (Sparkplug 3.0, chapters 6 and 7), on a connection of
its own to the `[mqtt]` broker.

- Each connection has a birth/death sequence number, `bdSeq`, one more than the last. The
  connection's last will is an NDEATH carrying it (QoS 1, not retained); once connected the
  node subscribes to its NCMD topic, then publishes NBIRTH (QoS 0, `seq` 0) with `bdSeq`
  and `Node Control/Rebirth` = false, then a DBIRTH for every device that is online.
- A DBIRTH names every channel of its device with an alias (unique in the edge node), the
  Double data type, its value and its unit (`engUnit` property). DDATA carries a poll's
  values by alias, timestamped with the poll. A device that goes offline gets a DDEATH, and a
  DBIRTH when it is back.
- `seq` counts every NBIRTH, DBIRTH, DDATA and DDEATH of the connection, 0 to 255 and round.
- An NCMD with `Node Control/Rebirth` = true is answered with a new NBIRTH (same `bdSeq`) and
  every DBIRTH again. At a clean stop the node publishes its NDEATH itself.
- Data waits in a bounded queue while the broker is away; what overflows is dropped and
  counted (the plain JSON publisher and the store keep everything)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from gatewayd.backoff import retry_delay
from gatewayd.clock import now_ms
from gatewayd.config import MqttSection, SparkplugSection
from gatewayd.publishing.mqtt import broker_client

from . import sparkplug_b_pb2

pb: Any = sparkplug_b_pb2  # protoc builds its classes at import: untyped for mypy

log = logging.getLogger("gatewayd.sparkplug")

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
QUEUED_MAX = 10_000
DOUBLE, INT64, BOOLEAN = pb.Double, pb.Int64, pb.Boolean


@dataclass
class Device:
    units: dict[str, str]
    aliases: dict[str, int] = field(default_factory=dict)
    alive: bool = False  # the gateway's latest word on it, set at once (a dropped event loses nothing)
    born: bool = False  # a DBIRTH went out on this connection, and no DDEATH since
    last: dict[str, float] = field(default_factory=dict)
    last_ms: int = 0


class SparkplugNode:
    def __init__(self, mqtt: MqttSection, settings: SparkplugSection, gateway: str):
        self.mqtt = mqtt
        self.group = settings.group_id
        self.node = settings.edge_node_id or gateway
        self.base = f"{NAMESPACE}/{self.group}"
        self.bd_seq = -1  # the first connection's is 0
        self.seq = 0
        self.devices: dict[str, Device] = {}
        self.next_alias = 1
        self.queue: asyncio.Queue[tuple[str, str, int, dict[str, float]]] = asyncio.Queue(QUEUED_MAX)
        self.dropped = 0
        self.published = 0
        self.connected = False

    # -- what the daemon offers (never blocks) ---------------------------------------------

    def device(self, name: str, online: bool, units: dict[str, str]) -> None:
        """A device's health changed (online, or not), or its channels became known."""
        known = self.devices.setdefault(name, Device(dict(units)))
        known.units = dict(units) or known.units
        known.alive = online
        self._offer(("state", name, now_ms(), {}))

    def data(self, name: str, ts_ms: int, values: dict[str, float]) -> None:
        self._offer(("data", name, ts_ms, values))

    def _offer(self, item: tuple[str, str, int, dict[str, float]]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    # -- the connection --------------------------------------------------------------------

    def topic(self, kind: str, device: str | None = None) -> str:
        return f"{self.base}/{kind}/{self.node}" + (f"/{device}" if device else "")

    def _client(self, bd_seq: int) -> aiomqtt.Client:
        will = aiomqtt.Will(self.topic("NDEATH"), self._death(bd_seq), qos=1, retain=False)
        return broker_client(self.mqtt, f"gatewayd-{self.node}-sparkplug", will)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            self.bd_seq = (self.bd_seq + 1) % 256
            try:
                async with self._client(self.bd_seq) as client:
                    await client.subscribe(self.topic("NCMD"), qos=1)
                    await self._births(client)
                    self.connected, failures = True, 0
                    commands = asyncio.create_task(self._commands(client))
                    try:
                        while not stop.is_set():
                            if commands.done():
                                commands.result()  # the connection broke under it: reconnect
                            try:
                                item = await asyncio.wait_for(self.queue.get(), 0.5)
                            except TimeoutError:
                                continue
                            await self._handle(client, item)
                        await client.publish(self.topic("NDEATH"), self._death(self.bd_seq), qos=1)
                    finally:
                        commands.cancel()
                        await asyncio.gather(commands, return_exceptions=True)
            except Exception as exc:  # the broker gone, or a bug: Sparkplug stops, never the gateway
                self.connected = False
                failures += 1
                if not isinstance(exc, aiomqtt.MqttError | OSError):
                    log.exception("Sparkplug: edge node failed; connecting again")
                elif failures == 1:
                    log.warning("Sparkplug: broker %s:%d unreachable: %s", self.mqtt.host, self.mqtt.port, exc)
                try:
                    await asyncio.wait_for(stop.wait(), retry_delay(failures, first_s=1.0, max_s=60.0, jitter=0.2))
                except TimeoutError:
                    pass
        self.connected = False

    async def _commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = pb.Payload()
            try:
                payload.ParseFromString(bytes(message.payload))  # type: ignore[arg-type]
            except Exception:  # anyone on the plant network can publish: a bad one is ignored
                log.warning("Sparkplug: NCMD that is not a Sparkplug payload ignored")
                continue
            if any(m.name == REBIRTH and m.boolean_value for m in payload.metrics):
                log.info("Sparkplug: rebirth requested")
                await self._births(client)

    # -- messages --------------------------------------------------------------------------

    def _next_seq(self) -> int:
        seq, self.seq = self.seq, (self.seq + 1) % 256
        return seq

    def _payload(self, ts_ms: int, *, seq: bool = True) -> pb.Payload:
        payload = pb.Payload(timestamp=ts_ms)
        if seq:
            payload.seq = self._next_seq()
        return payload

    def _death(self, bd_seq: int) -> bytes:
        payload = pb.Payload(timestamp=now_ms())
        payload.metrics.add(name="bdSeq", datatype=INT64, long_value=bd_seq)
        return payload.SerializeToString()

    async def _births(self, client: aiomqtt.Client) -> None:
        self.seq = 0
        birth = self._payload(now_ms())
        birth.metrics.add(name="bdSeq", datatype=INT64, long_value=self.bd_seq, timestamp=birth.timestamp)
        birth.metrics.add(name=REBIRTH, datatype=BOOLEAN, boolean_value=False, timestamp=birth.timestamp)
        await client.publish(self.topic("NBIRTH"), birth.SerializeToString(), qos=0)
        self.published += 1
        for name, device in self.devices.items():
            device.born = False
            if device.alive and device.units:
                await self._device_birth(client, name, device)

    async def _device_birth(self, client: aiomqtt.Client, name: str, device: Device) -> None:
        ts = device.last_ms or now_ms()
        birth = self._payload(ts)
        for channel, unit in device.units.items():
            if channel not in device.aliases:
                device.aliases[channel] = self.next_alias
                self.next_alias += 1
            metric = birth.metrics.add(name=channel, alias=device.aliases[channel], datatype=DOUBLE, timestamp=ts)
            if channel in device.last:
                metric.double_value = device.last[channel]
            else:
                metric.is_null = True
            if unit:
                metric.properties.keys.append("engUnit")
                metric.properties.values.add(type=pb.String, string_value=unit)
        await client.publish(self.topic("DBIRTH", name), birth.SerializeToString(), qos=0)
        device.born = True
        self.published += 1

    async def _handle(self, client: aiomqtt.Client, item: tuple[str, str, int, dict[str, float]]) -> None:
        kind, name, ts_ms, values = item
        device = self.devices.setdefault(name, Device({}))
        if kind == "state":  # brought in line with the device's latest state
            if device.alive and not device.born and device.units:
                await self._device_birth(client, name, device)
            elif not device.alive and device.born:
                device.born = False
                await client.publish(self.topic("DDEATH", name), self._payload(ts_ms).SerializeToString(), qos=0)
                self.published += 1
            return
        device.last.update(values)
        device.last_ms = ts_ms
        if not device.born:
            return  # data of a device not born (yet): its DBIRTH will carry the latest values
        data = self._payload(ts_ms)
        for channel, value in values.items():
            alias = device.aliases.get(channel)
            if alias is not None:
                data.metrics.add(alias=alias, datatype=DOUBLE, double_value=value, timestamp=ts_ms)
        await client.publish(self.topic("DDATA", name), data.SerializeToString(), qos=0)
        self.published += 1
