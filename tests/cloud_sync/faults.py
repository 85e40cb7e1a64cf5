"""Faults the reference endpoint commits on request, as plain ASGI middleware for
`BackgroundEndpoint(..., wrap=...)`: refusals (500, 429), a connection dropped before or after
the batch was stored, an answer that comes after the client gave up, and a bundle download cut
off half-way.

A dropped connection is an answer begun and never finished: the middleware sends
`http.response.start` with a Content-Length and raises `InjectedFault` before any body. uvicorn
(both its httptools and h11 protocols) then closes the transport, as it does for any exception
after the answer has started, so the client reads headers and then the end of the connection:
`requests` raises ChunkedEncodingError (or ConnectionError when the close overtakes the
headers). Raising before the start would not do: uvicorn would answer a clean 500 instead.
uvicorn logs each injected fault as "Exception in ASGI application" with this exception."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

SLOW_S = 1.5  # how late a "slow" answer comes: past the 1 s client timeout of the upload tests
_BUNDLE = re.compile(r"^/v1/models/[^/]+/[^/]+$")


class InjectedFault(Exception):
    """Raised by the middleware once an answer has started: the connection is dropped mid-answer."""


async def drain(receive: Receive) -> int:
    """Read the request body to its end (or the client's disconnect); its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return size


async def read_some(receive: Receive, at_least: int) -> None:
    """Read at least `at_least` bytes of the body (or all of a shorter one), leaving the rest."""
    size = 0
    while size < at_least:
        message = await receive()
        size += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def answer_json(send: Send, status: int, body: dict[str, Any], headers: Iterable[tuple[str, str]] = ()) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in headers),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def drop_mid_answer(send: Send, what: str) -> None:
    """Begin a 200 that promises 100 bytes, then drop the connection without any of them."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        }
    )
    raise InjectedFault(f"injected: connection dropped {what}")


async def swallow(message: Message) -> None:
    """A `send` for the inner app whose answer is to be lost."""


class UploadFaults:
    """What the endpoint does with each upload (POST /v1/batches), in the order of `plan`; then
    it behaves. Actions:

    - "500": the body is read and a 500 answered; nothing is stored
    - "429": the same with 429 and Retry-After: 0.3
    - "reset-before": part of the body is read, then the connection drops; nothing is stored
    - "reset-after": the batch is stored, then the connection drops: the answer is lost
    - "slow": the batch is stored and answered `SLOW_S` seconds later (after a 1 s client gave up)
    """

    ACTIONS = ("500", "429", "reset-before", "reset-after", "slow", "ok")

    def __init__(self, plan: Iterable[str] = ()):
        self.plan = list(plan)
        unknown = set(self.plan) - set(self.ACTIONS)
        assert not unknown, f"unknown fault(s) {unknown}: one of {self.ACTIONS}"
        self.seen = 0  # uploads the endpoint received
        self.lock = threading.Lock()  # the plan is taken in the server's thread, `seen` read in the test's

    def next(self) -> str:
        with self.lock:
            self.seen += 1
            return self.plan.pop(0) if self.plan else "ok"

    def wrap(self, app: App) -> App:
        async def faulty(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/batches":
                await app(scope, receive, send)
                return
            action = self.next()
            if action == "500":
                await drain(receive)
                await answer_json(send, 500, {"error": "injected"})
            elif action == "429":
                await drain(receive)
                await answer_json(send, 429, {"error": "slow down"}, [("Retry-After", "0.3")])
            elif action == "reset-before":  # the inner app never sees the batch
                await read_some(receive, 10)
                await drop_mid_answer(send, "mid-upload")
            elif action == "reset-after":
                await app(scope, receive, swallow)
                await drop_mid_answer(send, "after the batch was stored")
            elif action == "slow":
                answer: list[Message] = []

                async def keep(message: Message) -> None:
                    answer.append(message)

                await app(scope, receive, keep)
                await asyncio.sleep(SLOW_S)  # the fault itself: an endpoint that answers late
                for message in answer:
                    await send(message)  # uvicorn drops them if the client has gone
            else:
                await app(scope, receive, send)

        return faulty


class TruncatedBundles:
    """While `active`, a bundle download (GET /v1/models/{name}/{version}) that would succeed
    sends its headers with the full Content-Length but only the first half of the archive, and
    the connection drops. Other answers (errors, 304s, the listing) pass untouched."""

    def __init__(self) -> None:
        self.active = False

    def wrap(self, app: App) -> App:
        async def truncating(scope: Scope, receive: Receive, send: Send) -> None:
            if not (self.active and scope["type"] == "http" and _BUNDLE.match(scope["path"])):
                await app(scope, receive, send)
                return
            answer: list[Message] = []

            async def keep(message: Message) -> None:
                answer.append(message)

            await app(scope, receive, keep)
            start, rest = answer[0], answer[1:]
            body = b"".join(m.get("body", b"") for m in rest)
            if start["status"] != 200 or not body:
                for message in answer:
                    await send(message)
                return
            await send(start)  # the original headers: Content-Length promises the whole archive
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise InjectedFault("injected: bundle download cut off half-way")

        return truncating
