"""systemd integration: readiness, watchdog and status notifications, journald logging.

Everything here is a no-op outside systemd (no NOTIFY_SOCKET), so the daemon runs the same
from a shell."""

from __future__ import annotations

import logging
import os
import sys

try:  # the `linux` extra; without it the daemon still runs, only unannounced
    from systemd import daemon as sd_daemon
    from systemd import journal as sd_journal
except ImportError:  # pragma: no cover - depends on the installation
    sd_daemon = None
    sd_journal = None


def notify(message: str) -> None:
    if sd_daemon is not None and os.environ.get("NOTIFY_SOCKET"):
        sd_daemon.notify(message)


def watchdog_interval_s() -> float | None:
    """Half the WATCHDOG_USEC systemd gave this process, or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


def under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    if under_systemd() and sd_journal is not None:
        handler: logging.Handler = sd_journal.JournalHandler(SYSLOG_IDENTIFIER="gatewayd")
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # pymodbus logs every failed connect at ERROR; device health is reported by the poller instead.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
