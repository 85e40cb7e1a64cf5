"""The MQTT command topic (<prefix>/<gateway>/command): every message is answered here, applied
or refused. Nothing a publisher sends (oversized, deeply nested, not UTF-8, retained, unsigned,
replayed, or a payload that meets a bug) raises out of `CommandTopic.handle`: the command loop
and the daemon go on. Refusals are logged and kept as dead letters within a budget, so that a
flood fills neither the disk nor the journal. Formats and limits: docs/mqtt.md."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable

from gatewayd.alerts.commands import Command, CommandError, Missed, decode, validate_any
from gatewayd.config import Config
from gatewayd.publishing.command_auth import Authoriser, load_secret

log = logging.getLogger(__name__)

SOURCE = "mqtt-command"  # dead_letter.source
DEAD_LETTER_BYTES = 1024  # of a refused payload kept: enough to see what was sent
# Refusals logged and dead-lettered: 100 at once, then one every 10 s (at most 8,640 rows and
# 9 MB a day under a flood); the others are counted and reported once a minute.
RECORD_BURST = 100
RECORD_EVERY_S = 10.0
REPORT_EVERY_S = 60.0

RETAINED = (
    "refused: a retained command would be applied again at every reconnect and restart; publish it "
    "without retain, and clear the retained one with: mosquitto_pub -r -n -t TOPIC"
)

Apply = Callable[[Command | Missed], Awaitable[str]]
DeadLetter = Callable[[str, str, bytes], Awaitable[None]]


class Budget:
    """A token bucket on the monotonic clock: `burst` at once, then one per `every_s`."""

    def __init__(self, burst: int, every_s: float, monotonic: Callable[[], float] = time.monotonic):
        self.burst = burst
        self.every_s = every_s
        self.monotonic = monotonic
        self.tokens = float(burst)
        self.last = monotonic()

    def take(self) -> bool:
        now = self.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) / self.every_s)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class CommandTopic:
    """`handle(payload, retain)` returns the result to publish on .../command/result.

    `apply` applies a validated command on the store thread, raising CommandError for an
    unknown alert and one of `store_errors` when the store cannot take it (a full disk);
    `dead_letter(source, reason, payload)` keeps a refused command."""

    def __init__(
        self,
        config: Config,
        apply: Apply,
        dead_letter: DeadLetter,
        *,
        store_errors: tuple[type[Exception], ...] = (sqlite3.Error, OSError),
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] | None = None,
    ):
        self.gateway = config.gateway.name
        self.devices = frozenset(d.name for d in config.devices)
        self.apply = apply
        self.dead_letter = dead_letter
        self.store_errors = store_errors
        self.monotonic = monotonic
        mqtt = config.mqtt
        secret: bytes | None = None
        problem: str | None = None
        if mqtt is not None and mqtt.command_secret_file is not None:
            try:
                secret = load_secret(mqtt.command_secret_file)
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                problem = f"{mqtt.command_secret_file}: {getattr(exc, 'strerror', None) or exc}"
                log.error("mqtt.command_secret_file unusable, signed commands will be refused: %s", problem)
        unsigned = mqtt is not None and mqtt.accept_unauthenticated_commands
        self.authoriser = Authoriser(
            self.gateway, secret, unsigned, secret_problem=problem, wall_ms=wall_ms, monotonic=monotonic
        )
        if mqtt is not None:
            accepted = [what for what, yes in (("signed", secret is not None), ("unsigned", unsigned)) if yes]
            log.info(
                "MQTT commands: %s",
                " and ".join(accepted) + " accepted"
                if accepted
                else "all refused (set mqtt.command_secret_file or mqtt.accept_unauthenticated_commands)",
            )
        self.budget = Budget(RECORD_BURST, RECORD_EVERY_S, monotonic)
        self.applied = 0
        self.refused = 0
        self.unrecorded = 0  # refusals over the budget: neither logged nor dead-lettered
        self.reported = -REPORT_EVERY_S

    async def handle(self, payload: bytes, retain: bool = False) -> str:
        try:
            if retain:
                raise CommandError(RETAINED)
            data = decode(payload)
            command = validate_any(self.authoriser.authorise(data), self.gateway, self.devices)
        except CommandError as exc:
            return await self._refused(payload, str(exc))
        except Exception as exc:  # a bug: logged with its traceback, the loop goes on
            return await self._failed(payload, exc)
        try:
            result = await self.apply(command)
        except CommandError as exc:
            return await self._refused(payload, str(exc))
        except Exception as exc:
            if isinstance(exc, self.store_errors):  # e.g. a full disk: not a bug, no traceback
                return await self._refused(payload, f"not applied: the store cannot take it now: {exc}", logging.ERROR)
            return await self._failed(payload, exc)
        self.applied += 1
        log.info("MQTT command: %s", result)
        return result

    async def _refused(self, payload: bytes, reason: str, level: int = logging.WARNING) -> str:
        await self._record(payload, reason, level)
        return f"error: {reason}"

    async def _failed(self, payload: bytes, exc: Exception) -> str:
        await self._record(payload, f"internal error: {type(exc).__name__}: {exc}", logging.ERROR, exc)
        return f"error: internal error ({type(exc).__name__}) while handling the command; see the gateway's log"

    async def _record(self, payload: bytes, reason: str, level: int, exc: Exception | None = None) -> None:
        self.refused += 1
        if not self.budget.take():
            self.unrecorded += 1
            now = self.monotonic()
            if now - self.reported >= REPORT_EVERY_S:
                self.reported = now
                log.warning(
                    "MQTT command topic flooded: %d refused commands neither logged nor dead-lettered "
                    "so far (%d are kept at once, then one every %g s)",
                    self.unrecorded,
                    RECORD_BURST,
                    RECORD_EVERY_S,
                )
            return
        log.log(level, "MQTT command refused: %s", reason, exc_info=exc)
        try:
            await self.dead_letter(SOURCE, reason, bytes(payload[:DEAD_LETTER_BYTES]))
        except Exception as store_exc:  # a full disk: the refusal is logged, the command loop goes on
            log.error("MQTT command refusal not dead-lettered: %s", store_exc)
