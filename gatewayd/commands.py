"""Operator commands on alerts, from the MQTT command topic: validated at the boundary, applied
to the store exactly as `gatewayd alert ack|label` applies them.

Payload (JSON): {"command": "ack", "alert": ID} or
{"command": "label", "alert": ID, "label": "true"|"false", "operator": NAME (optional)}.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from gatewayd.store import Store

LABELS = {"true": "true_positive", "false": "false_positive"}


class CommandError(ValueError):
    """A command that cannot be applied; the message says why."""


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    command: Literal["ack", "label"]
    alert: str = Field(min_length=1, max_length=200)
    label: Literal["true", "false"] | None = None
    operator: str | None = Field(None, max_length=100)


def parse(payload: bytes) -> Command:
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise CommandError(f"not a valid command: not JSON ({exc})") from None
    return validate(data)


def validate(data: object) -> Command:
    """A command from its JSON object (MQTT payload, dashboard request); errors name the key."""
    try:
        command = Command.model_validate(data)
    except ValidationError as exc:
        raise CommandError("not a valid command: " + "; ".join(_describe(e) for e in exc.errors())) from None
    if command.command == "label" and command.label is None:
        raise CommandError("a label command needs \"label\": \"true\" or \"false\"")
    return command


def _describe(error: ErrorDetails) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "command"
    message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
    if error["type"] not in ("missing", "extra_forbidden", "model_type"):
        message += f" (got {error['input']!r})"
    return f"{key}: {message}"


def apply(store: Store, command: Command) -> str:
    """Apply to the store; returns what was done. Raises CommandError for an unknown alert."""
    try:
        if command.command == "ack":
            if store.acknowledge_alert(command.alert, command.operator):
                return f"alert {command.alert} acknowledged"
            if not store.alerts_by_id([command.alert]):
                raise KeyError(f"no alert {command.alert!r}")
            return f"alert {command.alert} was already acknowledged"
        assert command.label is not None
        store.label_alert(command.alert, LABELS[command.label], command.operator)
        return f"alert {command.alert} labelled {LABELS[command.label]}"
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
