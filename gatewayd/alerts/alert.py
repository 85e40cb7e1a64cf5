"""The alert: one value type for every producer (the node's own checks, the models, drift, a
device gone offline, an operator's missed anomaly), one id scheme, and the messages an alert
is published as.

An alert's id is `<gateway>:<device>:<subject>:<opened_ms>`, where the subject is the channel
for the node's own alerts (one per channel), and `model`, `drift`, `offline` or `missed`
otherwise: the same condition raised again at the same moment (a restart, a retried write)
is the same alert."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KINDS = ("edge", "model", "drift", "device", "operator")
SEVERITIES = ("info", "warning", "critical")


def alert_id(gateway: str, device: str, subject: str, opened_ms: int) -> str:
    return f"{gateway}:{device}:{subject}:{opened_ms}"


@dataclass(frozen=True)
class Alert:
    """An alert as it opens: stored, queued for the cloud and published as one."""

    id: str
    device: str
    channels: tuple[str, ...]
    severity: str
    kind: str
    opened_ms: int
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))

    @classmethod
    def new(
        cls,
        gateway: str,
        device: str,
        subject: str,
        *,
        kind: str,
        severity: str,
        opened_ms: int,
        channels: tuple[str, ...] | list[str],
        detail: dict[str, Any],
    ) -> Alert:
        return cls(
            alert_id(gateway, device, subject, opened_ms), device, tuple(channels), severity, kind, opened_ms, detail
        )

    def message(self) -> dict[str, Any]:
        """The alert as it is published on MQTT and uploaded (docs/mqtt.md)."""
        return {
            "id": self.id,
            "device": self.device,
            "channels": list(self.channels),
            "severity": self.severity,
            "kind": self.kind,
            "opened_ms": self.opened_ms,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class AlertChange:
    """An open alert escalated, updated or closed. Fields left None do not change."""

    id: str
    device: str
    kind: str
    severity: str | None = None
    closed_ms: int | None = None
    channels: tuple[str, ...] | None = None
    detail: dict[str, Any] | None = None

    def message(self) -> dict[str, Any]:
        """The change as it is published: `update` is true, only what changed is present."""
        body: dict[str, Any] = {"id": self.id, "device": self.device, "kind": self.kind, "update": True}
        for key in ("severity", "closed_ms", "channels", "detail"):
            value = getattr(self, key)
            if value is not None:
                body[key] = list(value) if key == "channels" else value
        return body


AlertSink = Callable[[Alert | AlertChange], None]
"""Where a producer sends its alerts and their changes (the daemon's AlertFanout)."""
