"""The dashboard's HTTP API against a running daemon: a token on a LAN binding, the same command
path as MQTT and `gatewayd alert` with clear errors, and the checks that keep other sites' pages
and oversized or slow requests out."""

from __future__ import annotations

import asyncio
import base64
import json
import socket

import numpy as np
import pytest

from gatewayd.alerts.alert import Alert
from gatewayd.cli.main import main
from gatewayd.clock import now_ms
from gatewayd.config import ConfigError, load_config, parse_config
from gatewayd.dashboard import server
from gatewayd.demo.virtual_node import free_port
from gatewayd.store.database import Store

from .support import DAY_MS, HOUR_MS, call, eventually, running_gateway, write_flow_history

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-for-tests-0123456789"


def site(tmp_path, dashboard: str) -> str:
    """A gateway whose one device does not answer (nothing listens there), detection off, and
    two alerts in its store already."""
    store = Store.in_state_dir(tmp_path / "state")
    store.record_alert(
        Alert(
            "g:pump-1:model:1000",
            "pump-1",
            ["flow"],
            "warning",
            "model",
            1000,
            {"top_features": [["flow:mean", 2.5]], "top_channels": ["flow"]},
        )
    )
    store.record_alert(
        Alert(
            "g:pump-1:current:2000",
            "pump-1",
            ["current"],
            "critical",
            "edge",
            2000,
            {"checks": ["high"], "value": 26.2, "source": "node"},
        )
    )
    store.close()
    return (
        f'[gateway]\nname = "g"\nstate_dir = "{tmp_path / "state"}"\n[detection]\nenabled = false\n'
        f"[dashboard]\nenabled = true\nport = {free_port()}\n{dashboard}\n"
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {free_port()}\n'
    )


def token_file(tmp_path, text: str = TOKEN, mode: int = 0o600):
    path = tmp_path / "dashboard-token"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def test_binding_beyond_loopback_needs_a_token(tmp_path):
    base = '[[devices]]\nname = "p"\nhost = "127.0.0.1"\n[dashboard]\nenabled = true\n'
    with pytest.raises(
        ConfigError,
        match=r"<config>:4: dashboard: host '0.0.0.0' is reachable from other "
        r"machines: set token_file",
    ):
        parse_config(base + 'host = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match="192.168.1.20"):
        parse_config(base + 'host = "192.168.1.20"\n')
    for loopback in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert parse_config(base + f'host = "{loopback}"\n').dashboard.token_file is None

    config = tmp_path / "gatewayd.toml"
    for text, mode, error in (
        (TOKEN, 0o644, "world-readable; chmod o-r it"),
        ("short", 0o600, "holds 5 characters, at least 16 are needed"),
    ):
        path = token_file(tmp_path, text, mode)
        config.write_text(base + f'host = "0.0.0.0"\ntoken_file = "{path}"\n')
        with pytest.raises(ConfigError, match=rf"gatewayd.toml:7: dashboard.token_file: .*{error}"):
            load_config(config)
    config.write_text(base + f'host = "0.0.0.0"\ntoken_file = "{tmp_path / "missing"}"\n')
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(config)
    path = token_file(tmp_path)
    config.write_text(base + f'host = "0.0.0.0"\ntoken_file = "{path}"\n')
    assert load_config(config).dashboard.host == "0.0.0.0"
    assert main(["check-config", "--config", str(config)]) == 0


async def test_on_the_lan_every_api_call_needs_the_token(tmp_path):
    path = token_file(tmp_path)
    async with running_gateway(site(tmp_path, f'host = "0.0.0.0"\ntoken_file = "{path}"')) as gateway:
        port = gateway.dashboard.port
        refused = await call(port, "GET", "/api/overview")
        assert refused.status == 401 and "token" in refused.json()["error"]
        assert refused.headers["www-authenticate"] == "Bearer"
        for path_ in ("/api/alerts", "/api/devices/pump-1/series"):
            assert (await call(port, "GET", path_)).status == 401
        assert (
            await call(port, "POST", "/api/command", {"command": "ack", "alert": "g:pump-1:model:1000"})
        ).status == 401
        assert (await call(port, "GET", "/api/overview", headers={"Authorization": "Bearer wrong"})).status == 401
        ok = await call(port, "GET", "/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200 and ok.json()["devices"][0]["name"] == "pump-1" and ok.json()["token_required"]

        page = await call(port, "GET", "/")  # the page itself holds no data: it asks for the token
        assert page.status == 200 and b'id="login"' in page.body

        wrong = await call(port, "POST", "/api/login", {"token": "guess"})
        assert wrong.status == 401 and wrong.json()["error"] == "wrong token" and "set-cookie" not in wrong.headers
        login = await call(port, "POST", "/api/login", {"token": TOKEN})
        assert login.status == 200
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        session = cookie.split(";")[0]
        alerts = await call(port, "GET", "/api/alerts", headers={"Cookie": session})
        assert alerts.status == 200 and len(alerts.json()) == 2
        forged = await call(port, "GET", "/api/alerts", headers={"Cookie": session[:-4] + "0000"})
        assert forged.status == 401


async def test_commands_take_the_mqtt_path_and_errors_say_what_is_wrong(tmp_path):
    async with running_gateway(site(tmp_path, "")) as gateway:
        port = gateway.dashboard.port

        async def command(body, **kwargs):
            reply = await call(port, "POST", "/api/command", body, **kwargs)
            return reply.status, reply.json()

        assert await command({"command": "label", "alert": "g:pump-1:model:1000", "label": "maybe"}) == (
            400,
            {"error": "not a valid command: label: Input should be 'true' or 'false' (got 'maybe')"},
        )
        assert await command({"command": "label", "alert": "g:pump-1:model:1000"}) == (
            400,
            {"error": 'a label command needs "label": "true" or "false"'},
        )
        assert await command({"command": "label", "alert": "g:pump-1:model:1000", "label": True}) == (
            400,
            {"error": "not a valid command: label: Input should be 'true' or 'false' (got True)"},
        )
        assert await command({"command": "delete", "alert": "x", "why": 1}) == (
            400,
            {
                "error": "not a valid command: command: Input should be 'ack' or 'label' (got 'delete'); "
                "why: unknown key"
            },
        )
        assert await command({"command": "label", "alert": "nope", "label": "true"}) == (
            404,
            {"error": "no alert 'nope'"},
        )
        assert await command(b"{not json") == (
            400,
            {
                "error": "the body is not a JSON object: not JSON: Expecting "
                "property name enclosed in double quotes: line 1 column 2 "
                "(char 1)"
            },
        )
        assert await command([1, 2]) == (
            400,
            {"error": "the body is not a JSON object: a command is a JSON object, not an array"},
        )
        # nesting that would make a recursive parser give up: refused before parsing, like on MQTT
        status, body = await command(b"[" * 4000)
        assert status == 400 and "nested more than 4 levels" in body["error"]
        status, body = await command(b'{"command": "ack", "alert": "x", "alert": "y"}')
        assert status == 400 and "appears twice" in body["error"]
        assert (await call(port, "POST", "/api/login", b"[" * 4000)).status == 400
        status, body = await command("x=1", headers={"Content-Type": "text/plain"})
        assert status == 415 and "application/json" in body["error"]
        status, body = await command({"command": "ack", "alert": "x" * 5000})
        assert status == 413 and "4096 bytes" in body["error"]

        status, body = await command(
            {"command": "label", "alert": "g:pump-1:model:1000", "label": "false", "operator": "ana"}
        )
        assert (status, body) == (200, {"result": "alert g:pump-1:model:1000 labelled false_positive"})
        assert await command({"command": "ack", "alert": "g:pump-1:current:2000"}) == (
            200,
            {"result": "alert g:pump-1:current:2000 acknowledged"},
        )
        assert await command({"command": "ack", "alert": "g:pump-1:current:2000"}) == (
            200,
            {"result": "alert g:pump-1:current:2000 was already acknowledged"},
        )

        # another site's page (it sends its Origin), or a host name pointed at 127.0.0.1
        status, body = await command(
            {"command": "ack", "alert": "g:pump-1:model:1000"}, headers={"Origin": "http://evil.example"}
        )
        assert status == 403 and "another site" in body["error"]
        own = await call(
            port,
            "POST",
            "/api/command",
            {"command": "ack", "alert": "g:pump-1:model:1000"},
            headers={"Origin": f"http://127.0.0.1:{port}"},
        )
        assert own.status == 200
        rebound = await call(port, "GET", "/api/overview", headers={"Host": f"evil.example:{port}"})
        assert rebound.status == 403 and "loopback" in rebound.json()["error"]
        assert (await call(port, "GET", "/api/overview", headers={"Host": f"localhost:{port}"})).status == 200

        series = await call(port, "GET", "/api/devices/pump-9/series")
        assert series.status == 404 and series.json()["error"] == "no device 'pump-9' in this gateway's configuration"
        series = await call(port, "GET", "/api/devices/pump-1/series?from=yesterday")
        assert series.status == 400 and series.json()["error"] == "from: not an integer: 'yesterday'"
        series = await call(port, "GET", "/api/devices/pump-1/series?from=0&to=1000000000000")
        assert series.status == 400 and series.json()["error"] == "from..to must span 1 ms to 7 days"
        assert (await call(port, "GET", "/api/nothing")).status == 404
        assert (await call(port, "GET", "/static/../server.py")).status == 404

    # The labels went where the CLI's and MQTT's go: the alert, the labels table and the outbox.
    store = Store.in_state_dir(tmp_path / "state")
    rows = store.conn.execute("SELECT label, acknowledged_ms IS NOT NULL FROM alerts ORDER BY id").fetchall()
    assert rows == [(None, 1), ("false_positive", 1)]  # current:2000 acknowledged, model:1000 labelled
    assert store.conn.execute("SELECT alert_id, label, operator FROM labels").fetchall() == [
        ("g:pump-1:model:1000", "false_positive", "ana")
    ]
    outbox = [json.loads(p) for (p,) in store.conn.execute("SELECT payload FROM outbox WHERE kind = 'label'")]
    assert [(o["alert_id"], o["label"], o["operator"]) for o in outbox] == [
        ("g:pump-1:model:1000", "false_positive", "ana")
    ]
    store.close()


async def test_oversized_slow_and_excess_connections_are_cut(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "REQUEST_TIMEOUT_S", 1.0)
    monkeypatch.setattr(server, "MAX_CONNECTIONS", 3)
    async with running_gateway(site(tmp_path, "")) as gateway:
        port = gateway.dashboard.port

        def exchange(data: bytes, wait_s: float = 5.0) -> bytes:
            """What the server answers before it closes; a timeout here means it never did."""
            chunks = []
            with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
                try:
                    s.sendall(data)
                    while chunk := s.recv(65536):
                        chunks.append(chunk)
                except ConnectionResetError:  # closed with our head still unread
                    pass
            return b"".join(chunks)

        def head(fillers: int) -> bytes:
            lines = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(fillers))
            return b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + lines + b"\r\n"

        assert (await asyncio.to_thread(exchange, head(8))).startswith(b"HTTP/1.0 200")
        reply = await asyncio.to_thread(exchange, head(20))
        assert reply == b"" or reply.startswith(b"HTTP/1.0 400")  # a head past 16 kB is refused
        reply = await asyncio.to_thread(exchange, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        assert reply == b""  # the deadline closed it

        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            await eventually("the three idle connections accepted", lambda: len(gateway.dashboard.app.open) == 3)
            reply = await asyncio.to_thread(exchange, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert reply.startswith(b"HTTP/1.0 200")  # the fourth is served: the oldest idle one made room
            idle[0].settimeout(5)
            try:
                assert idle[0].recv(1) == b""
            except ConnectionResetError:
                pass
        finally:
            for s in idle:
                s.close()
        await eventually("the closed connections gone", lambda: not gateway.dashboard.app.open)
        assert (await call(port, "GET", "/api/overview")).status == 200  # and then served again


def unpacked(series: dict, channel: dict, column: str = "values") -> tuple[np.ndarray, np.ndarray]:
    ts = series["from_ms"] + np.frombuffer(base64.b64decode(channel["ts"]), "<i4").astype(np.int64)
    return ts, np.frombuffer(base64.b64decode(channel[column]), "<f4")


async def test_series_fit_the_data_come_from_minutes_when_long_and_break_at_gaps(tmp_path):
    now = now_ms()
    written = write_flow_history(tmp_path / "state", now)
    config = site(tmp_path, "") + f'[[devices]]\nname = "pump-2"\nhost = "127.0.0.1"\nport = {free_port()}\n'
    async with running_gateway(config) as gateway:
        port = gateway.dashboard.port

        async def series(query: str) -> dict:
            reply = await call(port, "GET", f"/api/devices/pump-1/series?points=600&to={now}{query}")
            assert reply.status == 200, reply.body
            return reply.json()

        # No span chosen: from the first reading on, two days, drawn from 5-minute points of the summaries.
        fitted = await series("")
        assert fitted["first_ms"] == written[0] and fitted["from_ms"] == written[0] and fitted["to_ms"] == now
        assert (fitted["resolution"], fitted["point_ms"]) == ("minutes", 5 * 60_000)
        (flow,) = [c for c in fitted["channels"] if c["name"] == "flow"]
        ts, means = unpacked(fitted, flow)
        lows, highs = unpacked(fitted, flow, "min")[1], unpacked(fitted, flow, "max")[1]
        assert flow["readings"] == len(written) and flow["count"] == len(ts) < 600
        missing = np.flatnonzero(np.isnan(means))
        assert len(missing) == 1, "the four hours the daemon was stopped are one gap, the silent minute none"
        assert now - 30 * HOUR_MS < ts[missing[0]] < now - 26 * HOUR_MS
        shown = ~np.isnan(means)
        assert np.all(lows[shown] <= means[shown]) and np.all(means[shown] <= highs[shown])
        assert lows[shown].min() == 10.0 and highs[shown].max() == 16.0

        # An hour: raw readings, the stored ones, broken where the minute is missing.
        hour = await series(f"&from={now - HOUR_MS}")
        assert (hour["resolution"], hour["point_ms"]) == ("raw", None)
        (flow,) = [c for c in hour["channels"] if c["name"] == "flow"]
        ts, values = unpacked(hour, flow)
        inside = written[written >= now - HOUR_MS]
        assert flow["readings"] == len(inside) and ts[~np.isnan(values)].tolist() == inside.tolist()
        (gap,) = np.flatnonzero(np.isnan(values))
        assert now - 20 * 60_000 < ts[gap] < now - 19 * 60_000

        # A week is the longest span; a device without data gets half a minute.
        week = await series(f"&from={now - 7 * DAY_MS}")
        assert week["resolution"] == "minutes" and week["point_ms"] == 17 * 60_000
        too_long = await call(port, "GET", f"/api/devices/pump-1/series?from={now - 7 * DAY_MS - 1}&to={now}")
        assert too_long.status == 400 and too_long.json()["error"] == "from..to must span 1 ms to 7 days"
        empty = (await call(port, "GET", f"/api/devices/pump-2/series?to={now}")).json()
        assert (empty["first_ms"], empty["from_ms"], empty["resolution"]) == (None, now - 30_000, "raw")


async def test_the_overview_says_how_far_the_first_model_is_and_what_is_kept_locally(tmp_path):
    config = site(tmp_path, "").replace("[detection]\nenabled = false\n", "[detection]\nbootstrap_minutes = 0.5\n")
    async with running_gateway(config) as gateway:
        overview = (await call(gateway.dashboard.port, "GET", "/api/overview")).json()
    scope = overview["detection"]["scopes"]["pump-1"]
    assert scope["version"] is None and scope["collected_ms"] == 0 and scope["bootstrap_ms"] == 30_000
    assert overview["uplink"]["configured"] is False and overview["uplink"]["pending"] == {"alerts": 2, "labels": 0}
