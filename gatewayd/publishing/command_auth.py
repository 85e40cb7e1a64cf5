"""Who may change state over the MQTT command topic: signed commands (HMAC-SHA256 with a shared
secret, replays refused) or, where the broker's ACLs already decide, unsigned ones. Pure logic:
the clocks are passed in. Format and reasons: docs/mqtt.md, "Authorising commands".

A signed command is {"signed": TEXT, "hmac": HEX}: HEX is HMAC-SHA256(secret, UTF-8 bytes of
TEXT) in lowercase hexadecimal, and TEXT is the command's JSON object with three more keys:
"gateway" (the gateway it is meant for), "ts_ms" (UTC milliseconds when it was signed) and
"nonce" (16 to 64 characters of [A-Za-z0-9_-], never used twice). The MAC covers the exact
bytes that were signed, so no JSON canonicalisation is needed to check it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from gatewayd import clock
from gatewayd.alerts.commands import CommandError, decode_text
from gatewayd.config import MIN_TOKEN_CHARS

WINDOW_S = 300  # a signed command is valid this long either side of its ts_ms
NONCES = 10_000  # signed commands remembered at most (a window's worth at 30 per second)
MIN_SECRET_CHARS = MIN_TOKEN_CHARS  # as the dashboard's token; checked by check-config too
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
HEX_MAC = re.compile(r"[0-9a-fA-F]{64}")
SIGNED_KEYS = ("gateway", "ts_ms", "nonce")

UNAUTHORISED = (
    "refused: unsigned commands are not accepted here. Set mqtt.command_secret_file and sign "
    "commands (gatewayd command sign), or set mqtt.accept_unauthenticated_commands = true "
    "if the broker's ACLs keep everyone else off this topic"
)


def load_secret(path: str | Path) -> bytes:
    """The shared secret: the file's text without surrounding white space. Raises OSError,
    UnicodeDecodeError, or ValueError when it is too short to be a secret."""
    secret = Path(path).read_text(encoding="utf-8").strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(
            f"holds {len(secret)} characters, at least {MIN_SECRET_CHARS} are needed (e.g. openssl rand -hex 32)"
        )
    return secret.encode("utf-8")


def mac(secret: bytes, text: str) -> str:
    # surrogatepass: a lone surrogate (from a \ud800 escape) cannot have been signed, but must
    # not raise either; it just fails to match
    return hmac.new(secret, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def sign(command: dict, secret: bytes, gateway: str, *, now_ms: int | None = None, nonce: str | None = None) -> bytes:
    """The payload of a signed command for `gateway`: UTF-8 JSON, ready to publish."""
    if reserved := [k for k in ("signed", "hmac", *SIGNED_KEYS) if k in command]:
        raise ValueError(f"the command must not hold {', '.join(reserved)}: signing adds them")
    inner = {
        **command,
        "gateway": gateway,
        "ts_ms": clock.now_ms() if now_ms is None else now_ms,
        "nonce": secrets.token_hex(16) if nonce is None else nonce,
    }
    text = json.dumps(inner, ensure_ascii=False, separators=(",", ":"))
    return json.dumps({"signed": text, "hmac": mac(secret, text)}, ensure_ascii=False, separators=(",", ":")).encode()


class Authoriser:
    """Decides whether a decoded command may be applied; returns the command object to validate
    or raises CommandError saying why not.

    Replays: a signed command is accepted only within WINDOW_S of its ts_ms by this gateway's
    clock, only once (its nonce is remembered while it could still pass the time check, and at
    least 2 x WINDOW_S), and only if it was signed after this gateway started: nonces are kept in
    memory, so without that last rule a restart would open the window again. "Started" is taken
    as now minus the monotonic uptime, so it follows the clock when NTP steps it."""

    def __init__(
        self,
        gateway: str,
        secret: bytes | None,
        accept_unauthenticated: bool,
        *,
        secret_problem: str | None = None,
        wall_ms: Callable[[], int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.gateway = gateway
        self.secret = secret
        self.secret_problem = secret_problem
        self.accept_unauthenticated = accept_unauthenticated
        self.wall_ms = wall_ms or clock.now_ms
        self.monotonic = monotonic
        self.started = monotonic()
        self.nonces: dict[str, tuple[int, float]] = {}  # nonce: (ts_ms, monotonic when seen)

    def authorise(self, data: dict) -> dict:
        if "signed" not in data and "hmac" not in data:
            if not self.accept_unauthenticated:
                raise CommandError(UNAUTHORISED)
            return data
        return self._verify(data)

    def _verify(self, data: dict) -> dict:
        extra = sorted(set(data) - {"signed", "hmac"})
        if extra:
            raise CommandError(f'a signed command holds only "signed" and "hmac"; unknown key(s): {", ".join(extra)}')
        text, given = data.get("signed"), data.get("hmac")
        if not isinstance(text, str):
            raise CommandError("signed: the command's JSON text, as a string, is missing")
        if not isinstance(given, str) or not HEX_MAC.fullmatch(given):
            raise CommandError("hmac: 64 hexadecimal characters (HMAC-SHA256) expected")
        if self.secret is None:
            why = f" ({self.secret_problem})" if self.secret_problem else ""
            raise CommandError(
                f"refused: a signed command, but this gateway has no usable mqtt.command_secret_file{why}"
            )
        if not hmac.compare_digest(mac(self.secret, text), given.lower()):
            raise CommandError("refused: wrong signature (signed with another secret, or changed after signing)")
        inner = decode_text(text)
        missing = [k for k in SIGNED_KEYS if k not in inner]
        if missing:
            raise CommandError(f"signed: {', '.join(missing)} missing (gatewayd command sign adds them)")
        gateway, ts_ms, nonce = (inner.pop(k) for k in SIGNED_KEYS)
        if gateway != self.gateway:
            raise CommandError(f"refused: signed for gateway {gateway!r}, this is {self.gateway!r}")
        if not isinstance(ts_ms, int) or isinstance(ts_ms, bool) or not 0 <= ts_ms < 2**53:
            raise CommandError(f"signed: ts_ms must be UTC milliseconds (got {ts_ms!r})")
        if not isinstance(nonce, str) or not NONCE.fullmatch(nonce):
            raise CommandError("signed: nonce must be 16 to 64 characters of A-Z, a-z, 0-9, _ and -")
        now_ms = self.wall_ms()
        if abs(now_ms - ts_ms) > WINDOW_S * 1000:
            raise CommandError(
                f"refused: signed at {_when(ts_ms)} but this gateway's clock says {_when(now_ms)}, "
                f"{abs(now_ms - ts_ms) / 1000:.0f} s apart (at most {WINDOW_S} s): sign it again, "
                "and if the gateway's clock is wrong, set it (NTP)"
            )
        mono = self.monotonic()
        started_ms = now_ms - int((mono - self.started) * 1000)
        if ts_ms < started_ms:
            raise CommandError(
                f"refused: signed at {_when(ts_ms)}, before this gateway started ({_when(started_ms)}): sign it again"
            )
        self._forget(now_ms, mono)
        if nonce in self.nonces:
            raise CommandError(f"refused: a replay (nonce {nonce} was used already)")
        if len(self.nonces) >= NONCES:
            raise CommandError(f"refused: more than {NONCES} signed commands in {2 * WINDOW_S} s")
        self.nonces[nonce] = (ts_ms, mono)
        return inner

    def _forget(self, now_ms: int, mono: float) -> None:
        """Drop the nonces that could no longer pass the time check and are 2 x WINDOW_S old."""
        old = [
            n for n, (ts, seen) in self.nonces.items() if ts < now_ms - WINDOW_S * 1000 and mono - seen > 2 * WINDOW_S
        ]
        for n in old:
            del self.nonces[n]


def _when(ts_ms: int) -> str:
    try:
        return clock.iso(ts_ms)
    except (OverflowError, OSError, ValueError):
        return f"{ts_ms} ms"
