"""The wall clock as the daemon sees it: UTC milliseconds for records, whether the kernel has
synchronised it yet (a Raspberry Pi has no real-time clock: it boots with the time it last
saved and NTP corrects it later, often by days), and steps, seen as a jump between wall-clock
and monotonic time. Schedules never use the wall clock; records carry it."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised
STEP_S = 2.0  # a jump larger than this between two looks is a step, not drift or a slow turn
_RECHECK_S = 5.0


def _kernel_synchronized() -> bool | None:
    """What adjtimex(2) says (None where it cannot be asked)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        timex = ctypes.create_string_buffer(512)  # struct timex with modes = 0: a read-only query
        return int(libc.adjtimex(timex)) != _TIME_ERROR
    except (OSError, AttributeError):
        return None


def now_ms() -> int:
    """The wall clock in UTC milliseconds: what records carry."""
    return time.time_ns() // 1_000_000


def boot_id() -> str | None:
    """This boot's id: monotonic times from two processes compare only within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


class WallClock:
    def __init__(
        self,
        trust: str = "synchronized",
        *,
        wall_ns: Callable[[], int] | None = None,
        monotonic: Callable[[], float] | None = None,
        synchronized: Callable[[], bool | None] = _kernel_synchronized,
    ):
        self.trust = trust
        # looked up at each call, not bound now: tests (and libfaketime) move the clock under it
        self.wall_ns = wall_ns or (lambda: time.time_ns())
        self.monotonic = monotonic or (lambda: time.monotonic())
        self._ask_kernel = synchronized
        self._synchronized = True
        self._checked = -_RECHECK_S
        self._offset = self._wall_minus_monotonic()
        self.steps = 0
        self.last_step_s = 0.0

    def now_ms(self) -> int:
        return self.wall_ns() // 1_000_000

    def synchronized(self) -> bool:
        """Readings stamped now can be trusted: always with trust = "always", otherwise once the
        kernel says NTP (or PTP, or a GPS) has set the clock."""
        if self.trust == "always":
            return True
        now = self.monotonic()
        if now - self._checked >= _RECHECK_S:
            self._checked = now
            answer = self._ask_kernel()
            self._synchronized = True if answer is None else answer
        return self._synchronized

    def check_step(self) -> float | None:
        """The size of a wall-clock step since the last call (seconds, signed), or None."""
        offset = self._wall_minus_monotonic()
        step = offset - self._offset
        self._offset = offset
        if abs(step) < STEP_S:
            return None
        self.steps += 1
        self.last_step_s = step
        self._checked = -_RECHECK_S  # a step usually means NTP has just set the clock
        log.warning("the wall clock stepped by %+.1f s; readings carry the new time", step)
        return step

    def _wall_minus_monotonic(self) -> float:
        return self.wall_ns() / 1e9 - self.monotonic()

    def status(self) -> dict:
        return {
            "synchronized": self.synchronized(),
            "trust": self.trust,
            "steps": self.steps,
            "last_step_s": round(self.last_step_s, 3),
        }


def parse_time(text: str) -> int:
    """UTC milliseconds from an ISO 8601 time (naive means UTC) or a number of milliseconds."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 time nor milliseconds since the epoch") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def iso(ts_ms: int) -> str:
    """UTC milliseconds as ISO 8601 with a Z: how every time is shown to people."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
