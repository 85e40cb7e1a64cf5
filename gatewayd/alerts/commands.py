"""Operator commands on alerts: decoded and validated at the boundary, applied to the store
exactly as `gatewayd alert ack|label|missed` applies them. The MQTT command topic
(gatewayd/publishing/command_topic.py, which adds authorisation) and the dashboard use them.

Payload (JSON): {"command": "ack", "alert": ID} or
{"command": "label", "alert": ID, "label": "true"|"false", "operator": NAME (optional)}; over MQTT
also {"command": "missed", "device": NAME, "at": ISO 8601 or ms, "operator": NAME (optional)}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from gatewayd.alerts.alert import Alert, alert_id
from gatewayd.clock import iso, parse_time
from gatewayd.errors import GatewayError
from gatewayd.store.database import Store

LABELS = {"true": "true_positive", "false": "false_positive"}
COMMANDS = ("ack", "label", "missed")

# A command is four short fields: the largest valid one, signed, with every character of a
# 200-character alert id and a 100-character operator outside the BMP, is under 2 KB
# (tests/gatewayd/publishing/test_command_topic.py measures it). 4 KB leaves room for that and is what the
# dashboard accepts as a request body; anything larger is refused before it is decoded.
MAX_PAYLOAD_BYTES = 4096
# A command object is one level deep (a signed one: an object holding a string). A few levels
# more let a near miss get a precise error; deeper nesting is refused before json.loads, which
# recurses once per level and would raise RecursionError near 1000 levels.
MAX_DEPTH = 4

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class CommandError(GatewayError, ValueError):
    """A command that cannot be applied; the message says why."""


def _no_control_characters(text: str) -> str:
    if _CONTROL.search(text):
        raise ValueError("control characters are not allowed")
    return text


Text = Annotated[str, AfterValidator(_no_control_characters)]


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    command: Literal["ack", "label"]
    alert: Text = Field(min_length=1, max_length=200)
    label: Literal["true", "false"] | None = None
    operator: Text | None = Field(None, max_length=100)


class _MissedPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    command: Literal["missed"]
    device: Text = Field(min_length=1, max_length=64)
    at: Any = Field(description="When: milliseconds since the epoch, or ISO 8601 (UTC if no zone).")
    operator: Text | None = Field(None, max_length=100)


@dataclass(frozen=True)
class Missed:
    """An anomaly that raised no alert, reported by an operator: stored as an alert labelled
    "missed" (it counts against recall)."""

    alert_id: str
    device: str
    at_ms: int
    operator: str | None


def decode(payload: bytes) -> dict:
    """The JSON object of a payload from outside, or CommandError. Bounded in size and depth
    before anything is parsed: no input makes it recurse deeply or raise anything else."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandError(f"payload of {len(payload)} bytes refused: a command has {MAX_PAYLOAD_BYTES} bytes at most")
    if not payload.strip():
        raise CommandError("empty payload")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(f"not UTF-8: {exc.reason} (byte 0x{payload[exc.start]:02x} at offset {exc.start})") from None
    return decode_text(text)


def decode_text(text: str) -> dict:
    """As `decode`, from text already decoded (the content of a signed command)."""
    if len(text) > MAX_PAYLOAD_BYTES:
        raise CommandError(f"command of {len(text)} characters refused: {MAX_PAYLOAD_BYTES} at most")
    depth = nesting(text, MAX_DEPTH)
    if depth > MAX_DEPTH:
        raise CommandError(f"JSON nested more than {MAX_DEPTH} levels deep refused: a command is one flat object")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except CommandError:
        raise
    except (ValueError, RecursionError) as exc:  # RecursionError: cannot happen below MAX_DEPTH; contained anyway
        raise CommandError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError(f"a command is a JSON object, not {_json_kind(data)}")
    return data


def nesting(text: str, limit: int) -> int:
    """How deep JSON text nests arrays and objects (brackets inside strings do not count),
    without recursion; stops counting once past `limit`."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "[" or ch == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif ch == "]" or ch == "}":
            depth -= 1
    return deepest


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    data = dict(pairs)
    if len(data) != len(pairs):
        keys = [k for k, _ in pairs]
        twice = next(k for k in keys if keys.count(k) > 1)
        raise CommandError(f"key {twice!r} appears twice")
    return data


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def parse(payload: bytes) -> Command:
    """An ack or label command from a payload (see `decode` for the limits)."""
    return validate(decode(payload))


def validate(data: object) -> Command:
    """A command from its JSON object (MQTT payload, dashboard request); errors name the key."""
    try:
        command = Command.model_validate(data)
    except ValidationError as exc:
        raise CommandError("not a valid command: " + "; ".join(_describe(e) for e in exc.errors())) from None
    if command.command == "label" and command.label is None:
        raise CommandError('a label command needs "label": "true" or "false"')
    return command


def validate_any(data: object, gateway: str, devices: Collection[str] | None) -> Command | Missed:
    """Any operator command: ack and label as `validate`, and missed, whose device must be one
    of this gateway's `devices` (None: not known here, not checked) and whose time must be given."""
    if not isinstance(data, dict):
        raise CommandError(f"a command is a JSON object, not {_json_kind(data)}")
    name = data.get("command")
    if name not in COMMANDS:
        got = "" if "command" not in data else f" (got {name!r})"
        raise CommandError(f"not a valid command: command: should be 'ack', 'label' or 'missed'{got}")
    if name != "missed":
        return validate(data)
    try:
        payload = _MissedPayload.model_validate(data)
    except ValidationError as exc:
        raise CommandError("not a valid command: " + "; ".join(_describe(e) for e in exc.errors())) from None
    if devices is not None and payload.device not in devices:
        raise CommandError(
            f"device: no device {payload.device!r} in this gateway's configuration "
            f"(known: {', '.join(sorted(devices)) or 'none'})"
        )
    at = payload.at
    if isinstance(at, bool) or not isinstance(at, int | str):
        raise CommandError(f"at: milliseconds since the epoch or an ISO 8601 time expected (got {at!r})")
    if isinstance(at, str):
        try:
            at = parse_time(at)
        except (ValueError, OverflowError):
            raise CommandError(f"at: {at!r} is neither an ISO 8601 time nor milliseconds since the epoch") from None
    if not 0 <= at < 2**53:
        raise CommandError(f"at: {at} is not a time after 1970 in milliseconds")
    return Missed(alert_id(gateway, payload.device, "missed", at), payload.device, at, payload.operator)


def _describe(error: ErrorDetails) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "command"
    message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
    if error["type"] not in ("missing", "extra_forbidden", "model_type"):
        message += f" (got {error['input']!r})"
    return f"{key}: {message}"


def apply(store: Store, command: Command | Missed) -> str:
    """Apply to the store; returns what was done. Raises CommandError for an unknown alert."""
    if isinstance(command, Missed):
        when = iso(command.at_ms)
        if store.alerts_by_id([command.alert_id]):
            return f"missed anomaly on {command.device} at {when} was already recorded ({command.alert_id})"
        store.record_alert(
            Alert(
                command.alert_id,
                command.device,
                (),
                "warning",
                "operator",
                command.at_ms,
                {"source": "operator", "operator": command.operator},
            )
        )
        store.label_alert(command.alert_id, "missed", command.operator)
        return f"missed anomaly on {command.device} at {when} recorded ({command.alert_id})"
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
