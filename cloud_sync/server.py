"""The reference cloud endpoint (`cloud-sync serve`): accepts gateways' batches idempotently,
lists and serves model bundles. API: docs/cloud-api.md. Standard library HTTP server, threaded;
put it behind a TLS-terminating proxy (nginx, Caddy) on the internet.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import logging
import re
import secrets
import tarfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cloud_sync.storage import SqliteStorage, Storage

log = logging.getLogger("cloud_sync.server")
MAX_BODY = 16 << 20  # compressed
MAX_RECORDS_BYTES = 64 << 20  # after decompression
_KEY = re.compile(r"^[A-Za-z0-9:/_.@-]{1,200}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Tokens:
    """Gateway tokens, stored as SHA-256 hashes, one `gateway hash` pair per line."""

    def __init__(self, path: Path):
        self.path = path
        self.by_hash: dict[str, str] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    name, digest = line.split()
                    self.by_hash[digest] = name

    @staticmethod
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def gateway(self, token: str) -> str | None:
        digest = self.digest(token)
        for known, name in self.by_hash.items():
            if hmac.compare_digest(known, digest):
                return name
        return None

    def issue(self, gateway: str) -> str:
        """A new token for a gateway (printed once; only its hash is kept)."""
        if not _NAME.match(gateway):
            raise ValueError(f"not a gateway name: {gateway!r}")
        token = secrets.token_urlsafe(32)
        with open(self.path, "a") as f:
            f.write(f"{gateway} {self.digest(token)}\n")
        self.by_hash[self.digest(token)] = gateway
        return token


class BundleShelf:
    """Published bundles: `<root>/<gateway or segment>/<name>/<version>/` directories; served as
    tar archives. A gateway sees its own folder and `fleet/`."""

    def __init__(self, root: Path):
        self.root = root

    def latest(self, gateway: str) -> list[tuple[str, int, Path]]:
        out = []
        for scope in (gateway, "fleet"):
            folder = self.root / scope
            if not folder.is_dir():
                continue
            for name_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                versions = [
                    int(v.name) for v in name_dir.iterdir() if v.name.isdigit() and (v / "manifest.sig").exists()
                ]
                if versions:
                    out.append((name_dir.name, max(versions), name_dir / str(max(versions))))
        return out

    @staticmethod
    def archive(folder: Path) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=path.name)
        return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    server: "CloudServer"
    protocol_version = "HTTP/1.1"
    timeout = 15  # an idle keep-alive connection is closed after this

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def _reply(self, status: int, body: dict | bytes, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "application/gzip")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        # One request per connection: uploads are seconds apart, and a stopping server then
        # never waits on an idle keep-alive connection.
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _gateway(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            self._reply(HTTPStatus.UNAUTHORIZED, {"error": "bearer token required"})
            return None
        name = self.server.tokens.gateway(auth[7:].strip())
        if name is None:
            self._reply(HTTPStatus.UNAUTHORIZED, {"error": "unknown token"})
        return name

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/v1/health":
            self._reply(HTTPStatus.OK, {"ok": True})
            return
        gateway = self._gateway()
        if gateway is None:
            return
        if self.path == "/v1/models":
            listing = [
                {"name": n, "version": v, "url": f"/v1/models/{n}/{v}"} for n, v, _ in self.server.shelf.latest(gateway)
            ]
            body = json.dumps({"models": listing}).encode()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            if self.headers.get("If-None-Match") == etag:
                self._reply(HTTPStatus.NOT_MODIFIED, b"", {"ETag": etag})
                return
            self._reply(HTTPStatus.OK, {"models": listing}, {"ETag": etag})
            return
        match = re.fullmatch(r"/v1/models/([A-Za-z0-9_.-]+)/(\d+)", self.path)
        if match:
            for name, version, folder in self.server.shelf.latest(gateway):
                if name == match[1] and version == int(match[2]):
                    data = self.server.shelf.archive(folder)
                    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
                    if self.headers.get("If-None-Match") == etag:
                        self._reply(HTTPStatus.NOT_MODIFIED, b"", {"ETag": etag})
                        return
                    self._reply(HTTPStatus.OK, data, {"ETag": etag})
                    return
        self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/v1/batches":
            self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        gateway = self._gateway()
        if gateway is None:
            return
        batch_id = self.headers.get("Idempotency-Key", "")
        if not _KEY.match(batch_id):
            self._reply(
                HTTPStatus.BAD_REQUEST, {"error": "Idempotency-Key header required (1-200 of [A-Za-z0-9:/_.@-])"}
            )
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body must be 1..{MAX_BODY} bytes"})
            return
        body = self.rfile.read(length)
        try:
            if self.headers.get("Content-Encoding") == "gzip":
                with gzip.GzipFile(fileobj=io.BytesIO(body)) as f:
                    raw = f.read(MAX_RECORDS_BYTES + 1)
                if len(raw) > MAX_RECORDS_BYTES:
                    raise ValueError("too large when decompressed")
            else:
                raw = body
            records = json.loads(raw)["records"]
            if not isinstance(records, list) or not all(
                isinstance(r, dict)
                and set(r) == {"key", "kind", "payload"}
                and isinstance(r["key"], str)
                and _KEY.match(r["key"])
                and isinstance(r["kind"], str)
                and _KEY.match(r["kind"])
                for r in records
            ):
                raise ValueError("records must be objects with key, kind and payload")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"bad batch: {exc}"})
            return
        new, duplicate = self.server.storage.accept_batch(gateway, batch_id, records, length)
        self._reply(HTTPStatus.OK, {"accepted": new, "duplicate": duplicate})


class CloudServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = False  # server_close() waits for requests in flight: an answered batch is stored

    def __init__(
        self,
        address: tuple[str, int],
        storage: Storage,
        tokens: Tokens,
        shelf: BundleShelf,
        handler: type[Handler] = Handler,
    ):
        super().__init__(address, handler)
        self.storage = storage
        self.tokens = tokens
        self.shelf = shelf

    def start_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="cloud-server", daemon=True)
        thread.start()
        return thread


def open_server(
    data_dir: Path, host: str = "127.0.0.1", port: int = 8080, handler: type[Handler] = Handler
) -> CloudServer:
    data_dir.mkdir(parents=True, exist_ok=True)
    return CloudServer(
        (host, port),
        SqliteStorage(data_dir / "cloud.sqlite3"),
        Tokens(data_dir / "tokens"),
        BundleShelf(data_dir / "bundles"),
        handler,
    )
