"""A batch as the endpoint accepts it: decoded within size caps and checked record by record
against its kind (docs/cloud-api.md), before anything is stored. Whatever fails here answers
400 with the reason; nothing of the batch is kept.

Payloads may carry fields beyond the documented ones (a newer agent), but not structures
nested deeper than `MAX_DEPTH`: the standard library's parser recurses, and a 2 KB body of
brackets must be an answer, not a dropped connection.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import re
import zlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, create_model

from cloud_sync.errors import CloudSyncError

MAX_BODY = 16 << 20  # as sent
MAX_RECORDS_BYTES = 64 << 20  # after decompression
MAX_RECORDS = 10_000
MAX_DEPTH = 16
KEY_PATTERN = r"^[A-Za-z0-9:/_.@-]{1,200}$"
_KEY = re.compile(KEY_PATTERN)

Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Millis = Annotated[int, Field(ge=0, lt=1 << 53)]


class BatchError(CloudSyncError):
    """A batch that cannot be accepted as sent; the message says why (answered 400)."""

    status = 400


class BatchTooLarge(BatchError):
    """Past a size cap once decompressed (answered 413)."""

    status = 413


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow")


class AlertPayload(_Payload):
    id: Name
    device: Name
    channels: list[Name]
    severity: Literal["info", "warning", "critical"]
    kind: Name
    opened_ms: Millis
    detail: dict[str, Any] | str | None = None


class AlertUpdatePayload(_Payload):
    id: Name
    severity: Literal["info", "warning", "critical"] | None = None
    closed_ms: Millis | None = None


class ModelEventPayload(_Payload):
    event: Name
    name: Name
    version: int
    ts_ms: Millis


class ModelReportPayload(_Payload):
    ts_ms: Millis
    installed: list[str]
    rejected: list[str]


class WindowPayload(_Payload):
    device: Name
    channel: Name
    start_ms: Millis
    end_ms: Millis
    count: Annotated[int, Field(ge=0)]
    block: str


class LabelPayload(_Payload):
    alert_id: Name
    device: Name
    label: Literal["true_positive", "false_positive", "missed"]
    operator: str
    created_ms: Millis


class PackedSummary(_Payload):
    channels: list[Name]
    units: list[str]
    count: list[int]
    encoding: str
    data: str


class SummaryPayload(_Payload):
    minute_ms: Millis
    devices: dict[Name, PackedSummary]


class DeviceHealth(_Payload):
    state: str


class HealthPayload(_Payload):
    minute_ms: Millis
    devices: dict[Name, DeviceHealth]


PAYLOADS: dict[str, type[_Payload]] = {
    "alert": AlertPayload,
    "alert_update": AlertUpdatePayload,
    "model_event": ModelEventPayload,
    "model_report": ModelReportPayload,
    "window": WindowPayload,
    "label": LabelPayload,
    "summary": SummaryPayload,
    "health": HealthPayload,
}
# The time a record speaks of, per kind (alert updates without a close: the time received).
TIME_FIELD = {
    "alert": "opened_ms",
    "alert_update": "closed_ms",
    "model_event": "ts_ms",
    "model_report": "ts_ms",
    "window": "start_ms",
    "label": "created_ms",
    "summary": "minute_ms",
    "health": "minute_ms",
}


def _record_model(kind: str, payload: type[_Payload]) -> type[BaseModel]:
    name = "".join(p.title() for p in kind.split("_")) + "Record"
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        key=(Key, ...),
        kind=(Literal[kind], ...),  # type: ignore[valid-type, arg-type]
        payload=(payload, ...),
    )


RECORD_MODELS = [_record_model(kind, payload) for kind, payload in PAYLOADS.items()]
# One union over the kinds, told apart by `kind`: a new kind is one line of PAYLOADS.
AnyRecord: Any = Annotated[functools.reduce(operator.or_, RECORD_MODELS), Field(discriminator="kind")]  # type: ignore[valid-type]


class Batch(BaseModel):
    """The body of POST /v1/batches."""

    model_config = ConfigDict(extra="forbid")
    gateway: Name | None = None
    records: Annotated[list[AnyRecord], Field(max_length=MAX_RECORDS)]  # type: ignore[valid-type]


_BATCH = TypeAdapter(Batch)


@dataclass(frozen=True)
class StoredRecord:
    """A record as storage keeps it: the payload as canonical JSON text, and the time it speaks of."""

    key: str
    kind: str
    ts_ms: int | None
    payload: str


def decompress(body: bytes, encoding: str | None) -> bytes:
    """The JSON text of a body, refusing a gzip bomb and a truncated stream."""
    if encoding in (None, "", "identity"):
        return body
    if encoding != "gzip":
        raise BatchError(f"Content-Encoding {encoding!r} is not supported (gzip or none)")
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        raw = inflate.decompress(body, MAX_RECORDS_BYTES + 1)
    except zlib.error as exc:
        raise BatchError(f"not a gzip stream: {exc}") from None
    if len(raw) > MAX_RECORDS_BYTES:
        raise BatchTooLarge(f"more than {MAX_RECORDS_BYTES} bytes when decompressed")
    if not inflate.eof:
        raise BatchError("truncated gzip stream")
    return raw


_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


def _depth_within(text: bytes, limit: int) -> bool:
    """Bracket depth of a JSON text outside its strings, counted without recursion and without
    a loop in Python (it runs on every batch): escaped backslashes and quotes are dropped, the
    quotes left delimit the strings."""
    bare = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    codes = np.frombuffer(bare, dtype=np.uint8)
    outside = (np.cumsum(codes == 0x22, dtype=np.int32) & 1) == 0
    steps = np.where(outside, _STEP[codes], 0)
    return not steps.size or int(np.cumsum(steps, dtype=np.int32).max()) <= limit


def parse_batch(raw: bytes) -> list[StoredRecord]:
    """Validate a batch's JSON text; its records in the form storage keeps."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, RecursionError) or not _depth_within(raw, MAX_DEPTH + 4):
            raise BatchError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        raise BatchError(f"not JSON: {exc}") from None
    # body > records > record > payload > ...
    if isinstance(data, dict) and isinstance(data.get("records"), list) and not _depth_within(raw, MAX_DEPTH + 3):
        raise BatchError(f"a payload nested deeper than {MAX_DEPTH} levels")
    try:
        batch = _BATCH.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)[:5]
        )
        raise BatchError(f"{exc.error_count()} problem(s): {problems}") from None
    out = []
    for record, given in zip(batch.records, data["records"]):
        payload = given["payload"]
        ts = payload.get(TIME_FIELD[record.kind])
        out.append(
            StoredRecord(
                record.key,
                record.kind,
                ts if isinstance(ts, int) else None,
                json.dumps(payload, sort_keys=True, separators=(",", ":")),
            )
        )
    return out


def content_digest(records: list[StoredRecord]) -> str:
    """What a batch holds, independent of how it was serialized or compressed: a batch id sent
    again with the same digest is a retry, with another a conflict."""
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.key}\0{r.kind}\0{r.payload}\n".encode())
    return h.hexdigest()


def valid_key(value: str) -> bool:
    return bool(_KEY.match(value))
