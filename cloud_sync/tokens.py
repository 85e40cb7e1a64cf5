"""Gateway tokens: only their SHA-256 is kept, in the storage every server shares, so a token
issued or revoked with `cloud-sync token` holds on every server within `CACHE_S` seconds,
without a restart."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from pathlib import Path

from cloud_sync.storage import Storage
from gatewayd.clock import now_ms

GATEWAY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CACHE_S = 2.0  # how long a server trusts its last answer for a token (either way)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    def __init__(self, storage: Storage, *, cache_s: float = CACHE_S):
        self.storage = storage
        self.cache_s = cache_s
        self.cache: dict[str, tuple[float, str | None]] = {}
        self.lock = threading.Lock()

    def issue(self, gateway: str) -> str:
        """A new token for a gateway (shown once; only its hash is kept)."""
        if not GATEWAY_NAME.match(gateway):
            raise ValueError(f"not a gateway name: {gateway!r} (letters, digits, _ . -; up to 64)")
        token = secrets.token_urlsafe(32)
        self.storage.add_token(gateway, digest(token), now_ms())
        return token

    def revoke(self, gateway: str) -> int:
        return self.storage.revoke_tokens(gateway, now_ms())

    def gateway(self, token: str) -> str | None:
        """The gateway a token belongs to. The lookup is by the token's SHA-256: comparing digests
        of a 256-bit secret tells an attacker nothing about the token."""
        key = digest(token)
        now = time.monotonic()
        with self.lock:
            hit = self.cache.get(key)
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        name = self.storage.token_gateway(key)
        with self.lock:
            if len(self.cache) > 100_000:  # a flood of made-up tokens cannot grow it without bound
                self.cache.clear()
            self.cache[key] = (now, name)
        return name

    def import_file(self, path: Path) -> int:
        """Tokens of the file an earlier version kept (`gateway sha256` per line), moved into the
        storage once; the file is renamed so it is not read again."""
        if not path.exists():
            return 0
        count = 0
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, token_digest = line.split()
                if self.storage.token_gateway(token_digest) is None:
                    self.storage.add_token(name, token_digest, now_ms())
                count += 1
        path.rename(path.with_name(path.name + ".imported"))
        return count
