"""The reference cloud endpoint (`cloud-sync serve`): the sync API of docs/cloud-api.md as a
FastAPI application on uvicorn.

FastAPI because the API's contract is its pydantic models (the record kinds of
`cloud_sync.records`): the same models validate every record at the boundary and write the
OpenAPI document, so the document cannot drift from what is enforced. uvicorn because it runs
several worker processes on one listening socket with a fleet-sized backlog, keep-alive and a
hard cap on connections per process.

A server process keeps nothing another one would need: batches, tokens, jobs and (with a
database URL) bundles are in the storage, so two `serve` processes on one database answer as
one endpoint. TLS stays at a proxy (docs/cloud-endpoint.md).

Back-pressure, cheapest first: a gateway with more than `per_gateway` uploads in flight gets
429; a process with more than `max_inflight` gets 503; both with Retry-After, which the agent
honours. A retried batch is recognised by its id and the digest of its body before the body is
decompressed or parsed.
"""

import asyncio
import hashlib
import json
import logging
import os
import re
import resource
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from cloud_sync import __version__
from cloud_sync.bundles import BundleStore, open_bundles
from cloud_sync.pacing import Pacing
from cloud_sync.records import MAX_BODY, Batch, BatchError, content_digest, decompress, parse_batch, valid_key
from cloud_sync.storage import Storage, StorageUnavailable, open_storage
from cloud_sync.tokens import Tokens

log = logging.getLogger("cloud_sync.server")
BODY_TIMEOUT_S = 30.0
DEFAULT_PORT = 8090  # not the dashboard's 8080: both may run on one machine
MAX_CONNECTIONS = 4096  # per process; the open-file limit is raised to fit
STORAGE_AWAY_S = 10.0  # the least Retry-After while the database cannot be reached  # a body that trickles in slower than this is cut off (408)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class Limits:
    # Batches in work per process before 503: enough to keep a core and the database busy,
    # few enough that an accepted batch is answered in a few times its own work.
    max_inflight: int = 4
    per_gateway: int = 2  # batches in work per gateway per process before 429
    retry_after_s: float = 1.0  # the least Retry-After (cloud_sync.pacing raises it under load)
    queue_wait_s: float = 0.1  # how long a batch may wait for a slot before 503


class BatchAnswer(BaseModel):
    accepted: int
    duplicate: bool


class ErrorAnswer(BaseModel):
    error: str


class ModelEntry(BaseModel):
    name: str
    version: int
    url: str


class ModelList(BaseModel):
    models: list[ModelEntry]


class Health(BaseModel):
    ok: bool


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorAnswer, "description": "malformed batch: nothing of it is kept"},
    401: {"model": ErrorAnswer, "description": "no known bearer token"},
    408: {"model": ErrorAnswer, "description": "the body did not arrive in time"},
    409: {"model": ErrorAnswer, "description": "the batch id was used before for other records: nothing kept"},
    413: {"model": ErrorAnswer, "description": "body too large, as sent or decompressed"},
    429: {"model": ErrorAnswer, "description": "too many uploads from this gateway at once; see Retry-After"},
    503: {"model": ErrorAnswer, "description": "the endpoint is saturated or its database away; see Retry-After"},
}


def create_app(storage: Storage, bundles: BundleStore, tokens: Tokens, limits: Limits = Limits()) -> FastAPI:
    app = FastAPI(
        title="Edge gateway cloud sync API",
        version="1",
        summary=f"what cloud-sync run speaks (cloud-sync {__version__}); docs/cloud-api.md",
        docs_url=None,
        redoc_url=None,
    )
    bearer = HTTPBearer(auto_error=False, description="one token per gateway (`cloud-sync token`)")
    inflight: Counter[str] = Counter()

    pacing = Pacing(limits.max_inflight, floor_s=limits.retry_after_s)
    slots = asyncio.Semaphore(limits.max_inflight)

    def retry_after(gateway: str, at_least_s: float = 0.0) -> dict[str, str]:
        return {"Retry-After": pacing.retry_after(gateway, at_least_s)}

    async def gateway_of(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str | JSONResponse:
        if credentials is None or credentials.scheme.lower() != "bearer":
            return _error(401, "bearer token required")
        name = await run_in_threadpool(tokens.gateway, credentials.credentials)
        return name if name is not None else _error(401, "unknown token")

    @app.exception_handler(StorageUnavailable)
    async def storage_away(request: Request, exc: StorageUnavailable) -> JSONResponse:
        log.warning("storage unavailable: %s", exc)
        return _error(503, "storage unavailable, try again", retry_after("", STORAGE_AWAY_S))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]))

    @app.get("/v1/health", response_model=Health)
    async def health() -> dict:
        return {"ok": True}

    @app.post(
        "/v1/batches",
        response_model=BatchAnswer,
        responses=ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Batch"}}},
            }
        },
    )
    async def upload(
        request: Request,
        gateway: Annotated[str | JSONResponse, Depends(gateway_of)],
        idempotency_key: Annotated[str, Header(description="the batch id: 1-200 of [A-Za-z0-9:/_.@-]")] = "",
        content_encoding: Annotated[str | None, Header(description="gzip, or none")] = None,
    ) -> Any:
        if isinstance(gateway, JSONResponse):
            return gateway
        if not valid_key(idempotency_key):
            return _error(400, "Idempotency-Key header required (1-200 of [A-Za-z0-9:/_.@-])")
        if inflight[gateway] >= limits.per_gateway:
            return _error(429, f"{gateway} has {inflight[gateway]} uploads in flight", retry_after(gateway))
        inflight[gateway] += 1
        try:
            # a short wait for a slot smooths a burst; past it, the gateway is told when to return
            try:
                await asyncio.wait_for(slots.acquire(), limits.queue_wait_s)
            except TimeoutError:
                return _error(503, "busy", retry_after(gateway))
            began = time.monotonic()
            try:
                answer = await _accept(request, gateway, idempotency_key, content_encoding)
            finally:
                slots.release()
            pacing.served(gateway, time.monotonic() - began)
            return answer
        finally:
            inflight[gateway] -= 1
            if not inflight[gateway]:
                del inflight[gateway]

    async def _accept(request: Request, gateway: str, batch_id: str, encoding: str | None) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            return _error(413, f"body must be at most {MAX_BODY} bytes")
        try:
            body = await asyncio.wait_for(_read_capped(request), BODY_TIMEOUT_S)
        except TimeoutError:
            return _error(408, f"body not received within {BODY_TIMEOUT_S:.0f} s")
        except ClientDisconnect:
            log.info("%s hung up during its upload of %s", gateway, batch_id)  # a flaky link: it retries
            return Response(status_code=400)
        if body is None:
            return _error(413, f"body must be at most {MAX_BODY} bytes")
        if not body:
            return _error(400, "empty body")
        wire_digest = hashlib.sha256(body).hexdigest()
        seen = await run_in_threadpool(storage.batch_seen, gateway, batch_id)
        if seen is not None and seen.wire_digest == wire_digest:
            return {"accepted": 0, "duplicate": True}  # a retry, answered before decoding anything
        try:
            records = await run_in_threadpool(lambda: parse_batch(decompress(body, encoding)))
        except BatchError as exc:
            return _error(exc.status, f"bad batch: {exc}")
        digest = content_digest(records)
        if seen is not None:
            if seen.content_digest and seen.content_digest != digest:
                return _error(409, f"batch id {batch_id} was used before for other records")
            return {"accepted": 0, "duplicate": True}
        outcome = await run_in_threadpool(
            lambda: storage.accept_batch(
                gateway, batch_id, records, wire_digest=wire_digest, content_digest=digest, wire_bytes=len(body)
            )
        )
        if outcome.conflict:
            return _error(409, f"batch id {batch_id} was used before for other records")
        return {"accepted": outcome.accepted, "duplicate": outcome.duplicate}

    @app.get("/v1/models", response_model=ModelList, responses={304: {"description": "nothing new"}, **ERRORS})
    async def models(
        gateway: Annotated[str | JSONResponse, Depends(gateway_of)],
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Any:
        if isinstance(gateway, JSONResponse):
            return gateway
        listing = await run_in_threadpool(bundles.latest, gateway)
        body = json.dumps(
            {"models": [{"name": n, "version": v, "url": f"/v1/models/{n}/{v}"} for n, v in listing]}
        ).encode()
        etag = _etag(body)
        if if_none_match == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type="application/json", headers={"ETag": etag})

    @app.get(
        "/v1/models/{name}/{version}",
        responses={
            200: {"content": {"application/gzip": {}}, "description": "the bundle as a gzip-compressed tar"},
            304: {"description": "the ETag sent is current"},
            404: {"model": ErrorAnswer, "description": "no such bundle for this gateway"},
            **ERRORS,
        },
        response_class=Response,
    )
    async def bundle(
        name: str,
        version: int,
        gateway: Annotated[str | JSONResponse, Depends(gateway_of)],
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Any:
        if isinstance(gateway, JSONResponse):
            return gateway
        data = await run_in_threadpool(bundles.archive, gateway, name, version) if _NAME.match(name) else None
        if data is None:
            return _error(404, "not found")
        etag = _etag(data)
        if if_none_match == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(data, media_type="application/gzip", headers={"ETag": etag})

    # the request body's schema, which the upload route reads itself (gzip, capped)
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            batch_schema = Batch.model_json_schema(ref_template="#/components/schemas/{model}")
            schema["components"]["schemas"].update(batch_schema.pop("$defs", {}))
            schema["components"]["schemas"]["Batch"] = batch_schema
            for operations in schema["paths"].values():  # malformed requests answer 400 (above), never 422
                for operation in operations.values():
                    operation["responses"].pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _read_capped(request: Request) -> bytes | None:
    """The body, with or without Content-Length (chunked); None past MAX_BODY."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# -- running it ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeSettings:
    data: Path
    database: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = 1
    limits: Limits = Limits()
    backlog: int = 4096
    keep_alive_s: int = 15
    pool_size: int = 8

    def environment(self) -> dict[str, str]:
        """How worker processes learn the settings (uvicorn starts them from an import string)."""
        return {
            "CLOUD_SYNC_DATA": str(self.data),
            "CLOUD_SYNC_DATABASE": self.database or "",
            "CLOUD_SYNC_MAX_INFLIGHT": str(self.limits.max_inflight),
            "CLOUD_SYNC_PER_GATEWAY": str(self.limits.per_gateway),
            "CLOUD_SYNC_POOL_SIZE": str(self.pool_size),
        }


def open_parts(data: Path, database: str | None, pool_size: int = 8) -> tuple[Storage, BundleStore, Tokens]:
    data.mkdir(parents=True, exist_ok=True)
    storage = open_storage(data, database, pool_size=pool_size)
    tokens = Tokens(storage)
    tokens.import_file(data / "tokens")
    return storage, open_bundles(data, storage), tokens


def app_from_environment() -> FastAPI:
    """The factory each uvicorn worker process calls."""
    env = os.environ
    storage, bundles, tokens = open_parts(
        Path(env["CLOUD_SYNC_DATA"]), env.get("CLOUD_SYNC_DATABASE") or None, int(env["CLOUD_SYNC_POOL_SIZE"])
    )
    limits = Limits(int(env["CLOUD_SYNC_MAX_INFLIGHT"]), int(env["CLOUD_SYNC_PER_GATEWAY"]))
    app = create_app(storage, bundles, tokens, limits)
    app.router.add_event_handler("shutdown", storage.close)
    return app


def uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "backlog": settings.backlog,
        "timeout_keep_alive": settings.keep_alive_s,
        # uvicorn's own cap on connections, far above max_inflight: a fleet's idle keep-alives,
        # model polls and gateways waiting to be turned away with a Retry-After. Its own 503
        # carries no Retry-After (the agent then backs off exponentially).
        "limit_concurrency": MAX_CONNECTIONS,
        "timeout_graceful_shutdown": 30,
        "proxy_headers": True,
        "access_log": False,
        "log_level": "warning",
        "server_header": False,
    }


def serve(settings: ServeSettings) -> None:
    """Run until SIGTERM or SIGINT; requests in flight are answered before the process exits."""
    import uvicorn

    if settings.workers > 1 and not settings.database:
        raise ValueError("several workers need a shared database (--database postgresql://...)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_CONNECTIONS + 256
    if soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )
    storage, _, _ = open_parts(settings.data, settings.database, 1)  # migrations and token import, before any fork
    storage.close()
    log.info(
        "serving on %s:%d with %d worker(s), %s",
        settings.host,
        settings.port,
        settings.workers,
        "PostgreSQL" if settings.database else f"SQLite in {settings.data}",
    )
    os.environ.update(settings.environment())
    uvicorn.run("cloud_sync.server:app_from_environment", factory=True, **uvicorn_options(settings))


class BackgroundEndpoint:
    """The endpoint in a thread of this process, for tests and benchmarks: `.url`, `.storage`,
    `.tokens`, `.bundles`, and `stop()`. `wrap` puts ASGI middleware around the app."""

    def __init__(
        self,
        data: Path,
        *,
        database: str | None = None,
        port: int = 0,
        limits: Limits = Limits(),
        wrap: Any = None,
        ssl: tuple[Path, Path] | None = None,
    ):
        import uvicorn

        self.storage, self.bundles, self.tokens = open_parts(data, database)
        app = create_app(self.storage, self.bundles, self.tokens, limits)
        options = uvicorn_options(ServeSettings(data, database, port=port, limits=limits))
        if ssl is not None:
            options.update(ssl_certfile=str(ssl[0]), ssl_keyfile=str(ssl[1]))
        config = uvicorn.Config(wrap(app) if wrap else app, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="cloud-endpoint", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.server.should_exit = True
                self.storage.close()
                raise RuntimeError("the endpoint did not start (see the log)")
            threading.Event().wait(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if ssl else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        if self.thread.is_alive():
            raise RuntimeError("the endpoint did not stop within 60 s")
        self.storage.close()
