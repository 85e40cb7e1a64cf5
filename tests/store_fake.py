"""A stand-in for the daemon's typed store (gatewayd/store/async_store.py) that records every call
and answers reads from what a test gives it.

Calls are recorded as (method, args, kwargs). An opened alert is recorded as the row the store
keeps, (id, device, [channels], severity, kind, opened_ms, detail), and a change of one as
((id,), {what changes}), so that a test reads them as the store would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gatewayd.alerts.alert import Alert, AlertChange
from gatewayd.store.async_store import AsyncStore


class RecordingStore:
    def __init__(
        self, answers: dict[str, Any] | None = None, fail: Callable[[str], BaseException | None] | None = None
    ):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.answers = answers or {}  # method -> its answer, or a function of its arguments
        self.fail = fail  # method -> the exception it raises now, or None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not callable(getattr(AsyncStore, name, None)):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(_as_row(name, args, kwargs))  # attempts too: a failed one is recorded
            error = self.fail(name) if self.fail else None
            if error is not None:
                raise error
            answer = self.answers.get(name)
            return answer(*args, **kwargs) if callable(answer) else answer

        return call

    def named(self, name: str) -> list[tuple[str, tuple, dict]]:
        return [c for c in self.calls if c[0] == name]


def _as_row(name: str, args: tuple, kwargs: dict) -> tuple[str, tuple, dict]:
    if name == "record_alert" and isinstance(args[0], Alert):
        a = args[0]
        return name, (a.id, a.device, list(a.channels), a.severity, a.kind, a.opened_ms, a.detail), {}
    if name == "update_alert" and isinstance(args[0], AlertChange):
        c = args[0]
        changed = {k: getattr(c, k) for k in ("severity", "closed_ms", "detail") if getattr(c, k) is not None}
        return name, (c.id,), changed
    return name, args, kwargs
