"""The dashboard's HTTP server, a task of the daemon's asyncio loop (docs/dashboard.md).

Why inside the daemon: the page shows what only the running daemon knows (device health,
queues, recent window scores), and operator feedback must take the daemon's one path into the
store (`apply_command`, as the MQTT command topic and `gatewayd alert` do). Reads that may take
a while (an hour of readings) go through a read-only connection on a thread of the dashboard's
own, so a chart never holds up the store writer (WAL readers do not block it).

The store may be unreadable (not created yet, a failing or remounted disk): the reader is
opened when a request needs it and opened again after a fault, routes that read the store
answer 503 with the reason, and the overview still shows what the running gateway knows.

Why microdot: it adds 0.1 MB to the daemon's RSS where aiohttp.web adds 9 MB (its client,
connector and SSL context come along). What it lacks for a server on a plant network is added
here: deadlines for the request and for the whole exchange, a cap on the request head, and a cap
on connections that makes room for a newcomer by closing the connection that has waited longest
for its request, so that slow connections (slowloris) cannot lock the page out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import microdot.microdot as microdot_core
from microdot import Microdot, Request, Response

from gatewayd.alerts import commands
from gatewayd.clock import now_ms
from gatewayd.config import Config, is_loopback
from gatewayd.errors import GatewayError
from gatewayd.store.database import DB_NAME, Store
from gatewayd.store.faults import StoreFault, classify, describe

from . import spans, views
from .access import SESSION_COOKIE, SESSION_MAX_AGE_S, Access
from .running import RunningGateway

log = logging.getLogger("gatewayd.dashboard")
STATIC = Path(__file__).resolve().parent / "static"
REQUEST_TIMEOUT_S = 10.0  # from a connection's start to the last byte of its answer
# From a connection's start to the last byte of its request: a browser or script sends its head
# (and body, 4 kB at most) at once, while a slowloris client trickles it to hold its connection.
HEAD_TIMEOUT_S = 3.0
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 4 * 1024  # a command or a login
# Open connections at most, so that the daemon keeps descriptors for Modbus, MQTT and SQLite
# (systemd's soft limit is 1024); at the cap a newcomer takes the place of the connection that
# has waited longest for its request. A burst that asyncio accepts in one go (up to its listen
# backlog, 100) is over the cap only until the loop's next turns close the connections it evicts.
MAX_CONNECTIONS = 32
CAP_LOG_INTERVAL_S = 3600.0  # closings at the cap: the first is logged, then a line an hour at most
RETRY_BIND_S = 30.0
READER_CACHE_KIB = 256
READER_RETRY_S = 2.0  # a reader that could not be opened is tried again after this, at the earliest
# A read that takes longer is answered as the store being unreadable (a failing card can hold a
# read for minutes); the next requests are answered so at once while it still hangs.
READ_TIMEOUT_S = 4.0
SECURITY_HEADERS = {
    # everything comes from the gateway itself; nothing inline, nothing from elsewhere
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

ApplyCommand = Callable[[commands.Command], Awaitable[str]]

Request.max_content_length = MAX_BODY_BYTES
Request.max_body_length = MAX_BODY_BYTES


class HttpError(GatewayError):
    """Answered as {"error": message} with its status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class StoreUnreadable(HttpError):
    """The store cannot be read now (a fault of its disk, or it does not exist yet): 503."""

    def __init__(self, reason: str):
        super().__init__(503, f"the store cannot be read now: {reason}")
        self.reason = reason


def _log_exception(exc: BaseException) -> None:
    # microdot prints every exception's traceback to stderr; here they go to the log, and
    # requests refused on purpose or too malformed to parse only at debug level
    if isinstance(exc, HttpError | ValueError):
        log.debug("request refused: %s", exc)
    else:
        log.error("dashboard request failed", exc_info=exc)


microdot_core.print_exception = _log_exception  # type: ignore[attr-defined]


class _HeadLimit:
    """A stream reader that refuses a request head (request line and headers) above a size."""

    def __init__(self, reader: asyncio.StreamReader, limit: int):
        self.reader = reader
        self.left = limit

    async def readline(self) -> bytes:
        line = await self.reader.readline()
        self.left -= len(line)
        if self.left < 0:
            raise ValueError("request head too large")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)


@dataclass
class _Connection:
    started: float  # loop time
    deadline: asyncio.Timeout
    writer: asyncio.StreamWriter
    evicted: bool = False


class _Server(Microdot):
    """Microdot with deadlines, a cap on the head and a cap on connections.

    A connection is "receiving" until microdot has read its request (head and body) and
    dispatches it; the head is read before any check of the token, so anyone can open such
    connections. Refusing newcomers at the cap would let a few dozen of them, trickling their
    heads, lock everyone else out, and a cap per address would not help when they share the
    legitimate users' address (loopback, a NAT, a reverse proxy). So at the cap the connection
    that has waited longest for its request, the one that made the least progress, is closed
    to make room; a legitimate request arrives at once and is dispatched before enough others
    come to push it out (a flood of thousands of connections a second can: that is another
    attack, for a firewall's rate limit). Connections being answered are never closed for a
    newcomer: when every connection is being answered, the newcomer is refused.
    """

    def __init__(self) -> None:
        super().__init__()
        self.open: set[asyncio.Task] = set()  # every connection's task, the evicted ones until they end
        self.receiving: dict[asyncio.Task, _Connection] = {}  # oldest first
        self.evicting = 0  # evicted, not ended yet
        # connections closed before their answer, by reason; /api/overview shows them
        self.cut = {"evicted": 0, "refused": 0, "slow_request": 0, "slow_answer": 0}
        self.cap_logged_at: float | None = None

    async def handle_request(self, reader, writer):  # type: ignore[no-untyped-def]
        task = asyncio.current_task()
        if task is None:
            writer.close()
            return
        if len(self.open) - self.evicting >= MAX_CONNECTIONS and not self._evict_oldest():
            self._count("refused")
            writer.transport.abort()
            return
        started = asyncio.get_running_loop().time()
        connection = None
        self.open.add(task)
        try:
            async with asyncio.timeout_at(started + min(HEAD_TIMEOUT_S, REQUEST_TIMEOUT_S)) as deadline:
                connection = self.receiving[task] = _Connection(started, deadline, writer)
                await super().handle_request(_HeadLimit(reader, MAX_HEAD_BYTES), writer)
        except TimeoutError:
            if connection is not None and not connection.evicted:
                self._count("slow_request" if task in self.receiving else "slow_answer")
            writer.transport.abort()  # not close(): that would wait to send the rest of an answer
        except ConnectionError:
            writer.transport.abort()
        finally:
            self.open.discard(task)
            self.receiving.pop(task, None)
            if connection is not None and connection.evicted:
                self.evicting -= 1

    async def dispatch_request(self, req):  # type: ignore[no-untyped-def]
        # microdot calls this once it has read the request, head and body (or found it
        # malformed): from here the connection is being answered, under the whole deadline
        connection = self.receiving.pop(asyncio.current_task(), None)
        if connection is not None:
            connection.deadline.reschedule(connection.started + REQUEST_TIMEOUT_S)
        return await super().dispatch_request(req)

    def _evict_oldest(self) -> bool:
        if not self.receiving:
            return False
        task = next(iter(self.receiving))
        connection = self.receiving.pop(task)
        connection.evicted = True
        self.evicting += 1
        if not connection.deadline.expired():  # else its own deadline is ending it already
            connection.deadline.reschedule(-1.0)  # its task ends on the loop's next turn
        connection.writer.transport.abort()  # and its descriptor is freed with it
        self._count("evicted")
        return True

    def _count(self, reason: str) -> None:
        self.cut[reason] += 1
        if reason not in ("evicted", "refused"):
            return  # deadlines alone: a stalled client, a spare connection a browser never used
        now = time.monotonic()
        if self.cap_logged_at is not None and now - self.cap_logged_at < CAP_LOG_INTERVAL_S:
            return
        self.cap_logged_at = now
        log.warning(
            "dashboard: %d connections open, its cap: a newcomer takes the place of the "
            "connection that has waited longest for its request, or is refused while all are being "
            "answered (slow or idle clients, perhaps a slowloris attack). Connections closed so far: "
            "%s; the next such line comes in an hour at the earliest",
            MAX_CONNECTIONS,
            ", ".join(f"{n} {reason}" for reason, n in self.cut.items()),
        )


def _json(body: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status,
        {"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})},
    )


def _int_arg(request: Request, name: str, default: int, lowest: int, highest: int) -> int:
    text = request.args.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise HttpError(400, f"{name}: not an integer: {text[:40]!r}") from None
    if not lowest <= value <= highest:
        raise HttpError(400, f"{name}: {value} is outside {lowest}..{highest}")
    return value


class Dashboard:
    def __init__(self, config: Config, gateway: RunningGateway, apply_command: ApplyCommand):
        self.config = config
        self.settings = config.dashboard
        self.gateway = gateway
        self.apply_command = apply_command
        token = Path(self.settings.token_file).read_text(encoding="utf-8").strip() if self.settings.token_file else None
        self.access = Access(token, loopback=is_loopback(self.settings.host))
        self.static = views.read_static(STATIC)
        self.app = self._routes()
        self.port: int | None = None
        self.serving = asyncio.Event()
        self.reader: Store | None = None  # opened by the first read that needs it; only on the reading thread
        self.reading_thread: ThreadPoolExecutor | None = None
        self.read_error: str | None = None  # why the store could not be read last time; None once it could
        self.retry_reader_at = 0.0  # monotonic
        self.reading_since: float | None = None  # monotonic start of the read in progress
        self.read_stalled = False  # a read outlived READ_TIMEOUT_S (logged once until one is answered)

    @property
    def url(self) -> str:
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop`; a port that cannot be bound is retried, acquisition goes on."""
        loop = asyncio.get_running_loop()
        self.reading_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-read")
        try:
            server = await self._bind(stop)
            if server is None:
                return
            await server.start_serving()
            self.port = server.sockets[0].getsockname()[1]
            self.serving.set()
            log.info("dashboard on %s%s", self.url, "" if self.access.token_required else " (no token)")
            await stop.wait()
            server.close()
            for task in list(self.app.open):  # requests in flight; a page asks again
                task.cancel()
            await asyncio.gather(*self.app.open, return_exceptions=True)
            await server.wait_closed()
        finally:
            self.serving.clear()
            await loop.run_in_executor(self.reading_thread, self._close_reader)
            self.reading_thread.shutdown(wait=True)

    async def _bind(self, stop: asyncio.Event) -> asyncio.Server | None:
        while not stop.is_set():
            try:
                # with start_serving=False microdot binds and hands the server back (its stub says None)
                return await self.app.start_server(
                    self.settings.host,
                    self.settings.port,  # type: ignore[func-returns-value]
                    start_serving=False,
                )
            except OSError as exc:
                log.error(
                    "dashboard cannot listen on %s:%d (%s); trying again in %g s",
                    self.settings.host,
                    self.settings.port,
                    exc.strerror or exc,
                    RETRY_BIND_S,
                )
                try:
                    await asyncio.wait_for(stop.wait(), RETRY_BIND_S)
                except TimeoutError:
                    pass
        return None

    # -- reading the store ---------------------------------------------------------------

    async def _read(self, fn: Callable[..., Any], *args: object) -> Any:
        """fn(reader, *args) on the reading thread; StoreUnreadable (503) when the store cannot
        be read now, or when the disk has not answered within READ_TIMEOUT_S."""
        started = self.reading_since
        if started is not None and time.monotonic() - started > READ_TIMEOUT_S:
            raise StoreUnreadable(f"its disk has not answered a read for {time.monotonic() - started:.0f} s")
        job = asyncio.get_running_loop().run_in_executor(self.reading_thread, self._read_blocking, fn, args)
        try:
            result = await asyncio.wait_for(job, READ_TIMEOUT_S)
        except TimeoutError:
            if not self.read_stalled:
                log.warning(
                    "dashboard: a read of the store has not been answered within %g s (a failing disk?); "
                    "reads are answered 503 until it is",
                    READ_TIMEOUT_S,
                )
                self.read_stalled = True
            raise StoreUnreadable(f"its disk has not answered a read within {READ_TIMEOUT_S:g} s") from None
        self.read_stalled = False
        return result

    def _read_blocking(self, fn: Callable[..., Any], args: tuple) -> Any:
        # On the reading thread only: the reader is opened, used and closed here.
        self.reading_since = time.monotonic()
        try:
            if self.reader is None:
                if self.read_error is not None and time.monotonic() < self.retry_reader_at:
                    raise StoreUnreadable(self.read_error)
                # a small page cache: blocks come from the OS's file cache as fast
                self.reader = Store(self.config.state_path / DB_NAME, readonly=True, cache_kib=READER_CACHE_KIB)
            result = fn(self.reader, *args)
        except (sqlite3.DatabaseError, OSError) as exc:
            if isinstance(exc, sqlite3.ProgrammingError):
                raise  # a bug, not the disk
            raise StoreUnreadable(self._unreadable(exc)) from None
        finally:
            self.reading_since = None
        if self.read_error is not None:
            log.warning("dashboard: the store can be read again")
            self.read_error = None
        return result

    def _unreadable(self, exc: BaseException) -> str:
        """Drop the reader (its connection may be on a file system that failed; a new one is
        opened after READER_RETRY_S) and say why, in the log once per reason; returns it."""
        self._close_reader()
        path = self.config.state_path / DB_NAME
        kind = classify(exc)  # not with the state directory: that would write a probe file into it
        reason = describe(kind, exc, path) if kind is not None else f"{path}: {exc}"
        if reason != self.read_error:
            log.warning(
                "dashboard: the store cannot be read now: %s; its routes answer 503, the overview shows "
                "what the running gateway knows",
                reason,
            )
        self.read_error = reason
        self.retry_reader_at = time.monotonic() + READER_RETRY_S
        return reason

    def _close_reader(self) -> None:
        if self.reader is not None:
            reader, self.reader = self.reader, None
            try:
                reader.close()
            except sqlite3.Error:
                pass  # a connection on a failed disk may not close cleanly; it is dropped either way

    # -- routes --------------------------------------------------------------------------

    def _routes(self) -> _Server:
        app = _Server()
        access = self.access

        @app.before_request
        async def guard(request: Request) -> Response | None:
            host = request.headers.get("Host")
            if not access.host_allowed(host):
                return _json({"error": f"host {host!r} is not this dashboard's (it listens on loopback)"}, 403)
            if request.method == "POST":
                if not access.origin_allowed(request.headers.get("Origin"), host):
                    return _json({"error": "a request from another site's page is refused"}, 403)
                if (request.content_type or "").split(";")[0].strip() != "application/json":
                    return _json({"error": "the body must be JSON (Content-Type: application/json)"}, 415)
            if request.path.startswith("/api/") and request.path != "/api/login":
                if not access.authorised(request.headers.get("Authorization"), request.cookies.get(SESSION_COOKIE)):
                    return _json(
                        {
                            "error": "a token is needed: log in, or send Authorization: Bearer TOKEN",
                            "token_required": True,
                        },
                        401,
                        {"WWW-Authenticate": "Bearer"},
                    )
            return None

        @app.after_request
        async def headers(request: Request, response: Response) -> Response:
            response.headers.update(SECURITY_HEADERS)
            return response

        @app.errorhandler(HttpError)  # type: ignore[arg-type]
        async def http_error(request: Request, exc: HttpError) -> Response:
            return _json({"error": str(exc)}, exc.status)

        @app.errorhandler(404)
        async def not_found(request: Request) -> Response:
            return _json({"error": f"no such page: {request.path if request else '?'}"}, 404)

        @app.errorhandler(413)
        async def too_large(request: Request) -> Response:
            return _json({"error": f"the body is larger than {MAX_BODY_BYTES} bytes"}, 413)

        @app.get("/")
        async def index(request: Request) -> Response:
            return self._static("index.html")

        @app.get("/favicon.ico")
        async def favicon(request: Request) -> Response:
            return Response(b"", 204)

        @app.get("/static/<path:name>")
        async def static(request: Request, name: str) -> Response:
            return self._static(name)

        @app.post("/api/login")
        async def login(request: Request) -> Response:
            body = self._body(request)
            if not access.token_required:
                return _json({"result": "no token is configured"})
            session = access.login(str(body.get("token", "")))
            if session is None:
                await asyncio.sleep(0.5)  # a wrong guess costs the guesser time
                raise HttpError(401, "wrong token")
            cookie = f"{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_MAX_AGE_S}"
            return _json({"result": "logged in"}, 200, {"Set-Cookie": cookie})

        @app.post("/api/logout")
        async def logout(request: Request) -> Response:
            return _json(
                {"result": "logged out"},
                200,
                {"Set-Cookie": f"{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"},
            )

        @app.get("/api/overview")
        async def overview(request: Request) -> Response:
            # What the running gateway knows is shown whatever the store does; what only the
            # store knows (evictions, alert counts, the outbox) is null with the reason.
            try:
                stored = await self._read(views.store_status, self.config)
            except StoreUnreadable as exc:
                stored = views.store_missing(self.config, exc.reason)
            return _json(
                views.overview(self.config, self.gateway, stored, now_ms())
                | {"token_required": access.token_required, "connections_cut": dict(app.cut)}
            )

        @app.get("/api/alerts")
        async def alerts(request: Request) -> Response:
            limit = _int_arg(request, "limit", 50, 1, 500)
            device = request.args.get("device") or None
            kinds = [k for k in (request.args.get("kinds") or "").split(",") if k] or None
            unacknowledged = request.args.get("unacknowledged") in ("1", "true")
            return _json(await self._read(views.alerts, limit, device, kinds, unacknowledged))

        @app.get("/api/devices/<device>/series")
        async def series(request: Request, device: str) -> Response:
            if device not in {d.name for d in self.config.devices}:
                raise HttpError(404, f"no device {device!r} in this gateway's configuration")
            end = _int_arg(request, "to", now_ms(), 0, 2**53)
            points = _int_arg(request, "points", 600, 10, 4000)
            chosen = _int_arg(request, "from", -1, 0, 2**53)
            first = await self._read(views.first_reading_ms, device)
            # no `from`: the span fits the data (spans.py); the page sends one once its user chose
            start = spans.fitted_start(first, end) if chosen < 0 else chosen
            if not 0 < end - start <= spans.LONGEST_SPAN_MS:
                raise HttpError(400, f"from..to must span 1 ms to {spans.LONGEST_SPAN_MS // 86_400_000} days")
            interval_ms = next(d.interval_s for d in self.config.devices if d.name == device) * 1000
            if spans.resolution(end - start) == "raw":
                shown = await self._read(views.channel_series, device, start, end, points, interval_ms)
            else:
                point_ms = spans.minutes_per_point(end - start, points) * spans.MINUTE_MS
                shown = await self._read(views.channel_minutes, device, start, end, point_ms, interval_ms)
            stage = self.gateway.detection
            scores = views.score_series(
                stage.scores.get(device) if stage else None,
                start,
                end,
                points,
                self.config.detection.critical_ratio,
                self.config.detection.hop_s * 1000,
            )
            return _json(
                {"device": device, "from_ms": start, "to_ms": end, "first_ms": first, **shown, "scores": scores}
            )

        @app.post("/api/command")
        async def command(request: Request) -> Response:
            # The MQTT command payload, validated and applied exactly as there (gatewayd/alerts/commands.py).
            try:
                parsed = commands.validate(self._body(request))
            except commands.CommandError as exc:
                raise HttpError(400, str(exc)) from None
            try:
                result = await self.apply_command(parsed)
            except commands.CommandError as exc:
                raise HttpError(404, str(exc)) from None
            except StoreFault as exc:  # the store cannot take writes now: nothing was applied
                raise HttpError(503, f"the store cannot take writes now, the command was not applied: {exc}") from None
            log.info("dashboard command: %s%s", result, f" (by {parsed.operator})" if parsed.operator else "")
            return _json({"result": result})

        return app

    def _static(self, name: str) -> Response:
        found = self.static.get(name)
        if found is None:
            raise HttpError(404, f"no such file: {name}")
        body, content_type = found
        return Response(body, 200, {"Content-Type": content_type, "Cache-Control": "no-cache"})

    @staticmethod
    def _body(request: Request) -> dict:
        # The MQTT command topic's decoding: size checked by microdot already, UTF-8, nesting
        # scanned without recursion before json.loads, one object without duplicate keys.
        try:
            return commands.decode(request.body or b"")
        except commands.CommandError as exc:
            raise HttpError(400, f"the body is not a JSON object: {exc}") from None
