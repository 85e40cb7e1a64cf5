"""The dashboard in headless Chromium (Debian's, driven by Playwright) against a gateway fed by a
virtual node: the page loads from the gateway alone, its charts draw the stored readings and
the window scores, a fault injected into the node shows up as alerts, and labelling one in the
browser changes the label in SQLite; days of history with a gap are drawn from minute summaries,
broken at the gap. Screenshots go to test-artifacts/dashboard/; with UPDATE_DOC_IMAGES=1 the
pictures in docs/images/ are made again from the same run."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from gatewayd.clock import now_ms
from gatewayd.demo.virtual_node import VirtualNode, free_port
from gatewayd.store.database import Store

from .support import (
    ARTIFACTS,
    HOUR_MS,
    QUIET_METER,
    REPO,
    install_pump_model,
    quiet_meter,
    running_gateway,
    write_flow_history,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FAULT_SAMPLE = 150  # the node's motor current jumps 20 A at 15 s (100 ms samples): past its bound
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Where the chart's line should be: for sampled points of a chart, the canvas pixels around each
# point's position; returns how many points have a pixel of the series' colour there.
DRAWN_POINTS = """([key, step]) => {
  const u = window.dashboard.charts.find((c) => c.key === key);
  const line = u.series.findIndex((s) => s.label === key);  // the chart's own series, drawn on top
  const [r, g, b] = u.series[line].stroke().match(/\\w\\w/g).map((h) => parseInt(h, 16));
  const pixels = u.ctx.getImageData(0, 0, u.ctx.canvas.width, u.ctx.canvas.height);
  let checked = 0, drawn = 0;
  for (let i = 0; i < u.data[0].length; i += step) {
    const y = u.data[line][i];
    if (y === null) continue;
    const px = Math.round(u.valToPos(u.data[0][i], "x", true)), py = Math.round(u.valToPos(y, "y", true));
    checked++;
    search: for (let dx = -2; dx <= 2; dx++) for (let dy = -2; dy <= 2; dy++) {
      const k = ((py + dy) * pixels.width + px + dx) * 4;
      const d = Math.abs(pixels.data[k] - r) + Math.abs(pixels.data[k + 1] - g) + Math.abs(pixels.data[k + 2] - b);
      if (pixels.data[k + 3] > 200 && d < 60) { drawn++; break search; }
    }
  }
  return { checked, drawn };
}"""


# The score chart's y axis: how it is scaled, its ticks and their labels, its title.
SCORE_AXIS = """() => { const u = window.dashboard.charts.find((c) => c.key === "score");
  return { kind: u.scaleKind, ticks: u.axes[1]._splits, labels: u.axes[1]._values, label: u.axes[1].label,
           min: u.scales.y.min, max: u.scales.y.max, title: u.root.querySelector(".u-title").textContent }; }"""

# The share of the score chart's width where the alarm level's dashed line is drawn at 1.
ALARM_LINE = """() => { const u = window.dashboard.charts.find((c) => c.key === "score");
  const y = Math.round(u.valToPos(1, "y", true)), { left, width } = u.bbox;
  const px = u.ctx.getImageData(left, y - 1, width, 3).data;
  let drawn = 0;
  for (let x = 0; x < width; x++) {
    for (let row = 0; row < 3; row++) {
      const k = (row * width + x) * 4;
      if (px[k + 3] > 200 && Math.abs(px[k] - 198) + Math.abs(px[k + 1] - 40) + Math.abs(px[k + 2] - 40) < 60) { drawn++; break; }
    }
  }
  return drawn / width; }"""

# For the points of a chart's own series that are missing (a gap), the pixels of its colour in
# the plot's column there, top to bottom: none where the line is broken.
DRAWN_AT_GAPS = """([key]) => {
  const u = window.dashboard.charts.find((c) => c.key === key);
  const line = u.series.findIndex((s) => s.label === key);
  const [r, g, b] = u.series[line].stroke().match(/\\w\\w/g).map((h) => parseInt(h, 16));
  const { top, height } = u.bbox;
  const found = [];
  u.data[line].forEach((y, i) => {
    if (y !== null) return;
    const x = Math.round(u.valToPos(u.data[0][i], "x", true));
    const px = u.ctx.getImageData(x, top, 1, height).data;
    let drawn = 0;
    for (let k = 0; k < px.length; k += 4) {
      if (px[k + 3] > 200 && Math.abs(px[k] - r) + Math.abs(px[k + 1] - g) + Math.abs(px[k + 2] - b) < 60) drawn++;
    }
    found.push(drawn);
  });
  return found;
}"""

SPAN = """() => { const s = window.dashboard.series;
  return { chosen: document.querySelector(".spans button.chosen").dataset.span, from: s.from_ms, to: s.to_ms,
           first: s.first_ms, resolution: s.resolution, note: document.getElementById("span-note").textContent }; }"""


async def doc_image(page, name: str) -> None:
    """A picture for docs/dashboard.md, from this run, when UPDATE_DOC_IMAGES=1."""
    if os.environ.get("UPDATE_DOC_IMAGES") == "1":
        await page.screenshot(path=REPO / "docs" / "images" / name)


@asynccontextmanager
async def chromium(playwright, viewport: dict) -> AsyncIterator:
    """Debian's Chromium with a fresh profile: never a downloaded browser."""
    assert CHROMIUM.exists(), "chromium is missing: make test installs it (Debian package chromium)"
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        browser = await playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, viewport=viewport
        )
        try:
            yield browser.pages[0] if browser.pages else await browser.new_page()
        finally:
            await browser.close()


async def test_dashboard_in_chromium(tmp_path):
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    state = tmp_path / "state"
    install_pump_model(state)
    node = VirtualNode(unit=1, seed=5, extra_args=("--fault", f"3:offset:{FAULT_SAMPLE}:20"))
    node.start()
    port = free_port()
    config = (
        f'[gateway]\nname = "plant-7"\nstate_dir = "{state}"\n[store]\nflush_interval_s = 0.2\n'
        "[detection]\nwindow_s = 2.0\nhop_s = 0.5\n"
        f"[dashboard]\nenabled = true\nport = {port}\n"
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {node.port}\nunit = 1\ninterval_s = 0.1\n'
    )
    base = f"http://127.0.0.1:{port}/"
    figures = {}
    try:
        async with running_gateway(config) as gateway, async_playwright() as playwright:
            async with chromium(playwright, DESKTOP) as page:
                requests, problems = [], []
                page.on("request", lambda r: requests.append(r.url))
                page.on("console", lambda m: m.type == "error" and problems.append(m.text))
                page.on("pageerror", lambda e: problems.append(str(e)))

                started = time.monotonic()
                await page.goto(base)
                await page.wait_for_function("() => window.dashboard && window.dashboard.updates >= 1", timeout=15_000)
                figures["first_refresh_s"] = round(time.monotonic() - started, 3)
                figures["navigation"] = await page.evaluate(
                    "(() => { const n = performance.getEntriesByType('navigation')[0]; "
                    "return {dom_ms: n.domContentLoadedEventEnd, load_ms: n.loadEventEnd, bytes: n.transferSize}; })()"
                )

                # Nodes: the pump is online and its model is the one installed.
                card = page.locator('#node-list .card[data-device="pump-1"]')
                await card.locator(".badge.online").wait_for(timeout=15_000)
                assert "v1" in await card.inner_text()
                await page.locator("#model-list").get_by_text("test: simulated pump").wait_for()

                # Charts: the score and every channel drew points, and what they drew is in the store.
                await page.wait_for_function(
                    "() => window.dashboard.charts.length === 5 && window.dashboard.charts.every(c => c.data[0].length >= 10)",
                    timeout=20_000,
                )
                charts = await page.evaluate(
                    "window.dashboard.charts.map(c => ({key: c.key, x: c.data[0], "
                    "y: c.data[c.series.findIndex(s => s.label === c.key)]}))"
                )
                assert [c["key"] for c in charts] == ["score", "pressure", "flow", "temperature", "current"]
                reader = Store(state / "gatewayd.sqlite3", readonly=True)
                try:
                    stored = reader.readings("pump-1", "flow")
                finally:
                    reader.close()
                flow = next(c for c in charts if c["key"] == "flow")
                at = {int(t): v for t, v in zip(stored.ts_ms.tolist(), stored.values.tolist())}
                shown = [(round(x * 1000), y) for x, y in zip(flow["x"], flow["y"]) if y is not None]
                assert len(shown) >= 10 and all(t in at for t, _ in shown), "the chart shows readings the store lacks"
                assert np.allclose([y for _, y in shown], [at[t] for t, _ in shown], rtol=1e-5)
                score = charts[0]
                assert all(isinstance(v, float) for v in score["y"]) and len(score["y"]) >= 10
                for key in ("score", "flow", "current"):
                    result = await page.evaluate(DRAWN_POINTS, [key, 3])
                    assert result["checked"] >= 3 and result["drawn"] >= 0.8 * result["checked"], (key, result)

                # No span chosen: the charts start at the first reading (half a minute at least), not an hour back.
                span = await page.evaluate(SPAN)
                assert span["chosen"] == "all" and span["resolution"] == "raw" and span["first"] is not None
                assert span["to"] - span["from"] == max(30_000, span["to"] - span["first"]), span
                assert span["note"].startswith("all data: ")
                x_min = await page.evaluate("window.dashboard.charts[1].scales.x.min * 1000")
                assert abs(x_min - span["from"]) < 1

                # The score's axis: nothing below 0, says what the score is, the alarm level drawn at 1.
                axis = await page.evaluate(SCORE_AXIS)
                assert "alarm level" in axis["label"] and min(axis["ticks"]) >= 0, axis
                assert not any(label.startswith(("-", "−")) for label in axis["labels"]), axis
                assert axis["kind"] == "log" or axis["min"] == 0, axis
                assert await page.evaluate(ALARM_LINE) > 0.4

                await page.evaluate("() => window.scrollTo(0, 0)")
                await page.screenshot(path=ARTIFACTS / "desktop-before-fault.png", full_page=True)

                # The fault: the node's own check (an edge alert on the current) and the models both alert.
                edge = page.locator('#alert-list article[data-alert-id^="plant-7:pump-1:current:"]')
                await edge.wait_for(timeout=40_000)
                assert "critical" in await edge.get_attribute("class")
                assert "node checks: high" in await edge.inner_text()
                # (the model's alert for the fault is the one whose top feature is the current's)
                model = page.locator(
                    '#alert-list article[data-alert-id^="plant-7:pump-1:model:"]', has_text="features: current"
                ).first
                await model.wait_for(timeout=20_000)
                why = await model.locator(".why").inner_text()
                assert "channels: current" in why and "peak score" in why, why
                await page.wait_for_function(  # the score chart shows the anomaly above its alarm line
                    "() => { const u = window.dashboard.charts[0]; "
                    "return Math.max(...u.data[u.series.findIndex(s => s.label === 'score')].filter(v => v !== null)) > 1; }",
                    timeout=10_000,
                )
                # Scores decades apart (the anomaly against normal windows): a log axis, a tick per
                # decade, no 0 on it, the alarm level still drawn.
                await page.wait_for_function("() => window.dashboard.charts[0].scaleKind === 'log'", timeout=10_000)
                axis = await page.evaluate(SCORE_AXIS)
                exponents = [np.log10(t) for t in axis["ticks"]]
                assert axis["min"] > 0 and all(abs(e - round(e)) < 1e-9 for e in exponents), axis
                assert "0" not in axis["labels"] and "log scale" in axis["title"], axis
                assert len(axis["ticks"]) >= 3 and "1" in axis["labels"] and all(axis["labels"]), axis
                assert await page.evaluate(ALARM_LINE) > 0.4

                # Feedback: the operator says the edge alert was real and acknowledges the model's.
                await page.fill("#operator", "ana")
                await page.locator("#operator").dispatch_event("change")
                edge_id = await edge.get_attribute("data-alert-id")
                model_id = await model.get_attribute("data-alert-id")
                await edge.get_by_role("button", name="Real anomaly").click()
                await edge.locator(".badge.label").wait_for(timeout=5_000)
                assert await edge.locator(".badge.label").inner_text() == "real anomaly"
                assert "labelled true_positive" in await page.locator("#feedback-message").inner_text()
                await model.get_by_role("button", name="Acknowledge").click()
                await page.locator(
                    f'#alert-list article[data-alert-id="{model_id}"] .badge', has_text="acknowledged"
                ).wait_for(timeout=5_000)

                # Zoom: on the 5 minute span, a drag across the end of the current's chart narrows
                # every chart to that span, with the readings in it.
                await page.click('.spans button[data-span="300"]')
                await page.wait_for_function(
                    "() => window.dashboard.series.to_ms - window.dashboard.series.from_ms === 300000"
                )
                over = page.locator('[data-chart="current"] .u-over')
                await over.scroll_into_view_if_needed()
                box = await over.bounding_box()
                assert box is not None
                y = box["y"] + box["height"] / 2
                await page.mouse.move(box["x"] + box["width"] * 0.8, y)
                await page.mouse.down()
                await page.mouse.move(box["x"] + box["width"] * 0.99, y, steps=5)
                await page.mouse.up()
                await page.wait_for_function("() => window.dashboard.zoom !== null")
                zoom = await page.evaluate("window.dashboard.zoom")
                assert 0.17 * 300_000 < zoom["to"] - zoom["from"] < 0.21 * 300_000
                await page.wait_for_function(  # every chart follows once the span's readings are in
                    """() => { const z = window.dashboard.zoom; return window.dashboard.charts.every(c =>
                         Math.abs(c.scales.x.min * 1000 - z.from) < 1 && Math.abs(c.scales.x.max * 1000 - z.to) < 1); }""",
                    timeout=5_000,
                )
                current = await page.evaluate("window.dashboard.charts.find(c => c.key === 'current').data[0]")
                assert len(current) >= 5 and all(zoom["from"] <= t * 1000 < zoom["to"] for t in current)
                assert not await page.locator("#zoom-note").is_hidden()
                await over.dblclick()
                await page.wait_for_function("() => window.dashboard.zoom === null")

                # The operator's span wins over the fitted one, also after a reload; "all" fits again.
                await page.reload()
                await page.wait_for_function("() => window.dashboard && window.dashboard.updates >= 1", timeout=15_000)
                span = await page.evaluate(SPAN)
                assert (span["chosen"], span["to"] - span["from"]) == ("300", 300_000), span
                await page.click('.spans button[data-span="all"]')
                await page.wait_for_function(
                    "() => window.dashboard.series.to_ms - window.dashboard.series.from_ms < 300000", timeout=5_000
                )
                span = await page.evaluate(SPAN)
                assert span["chosen"] == "all" and span["to"] - span["from"] == max(30_000, span["to"] - span["first"])
                await page.wait_for_function("() => window.dashboard.charts.length === 5", timeout=5_000)
                await page.select_option("#alert-which", "model,edge")
                await page.wait_for_timeout(500)

                await page.evaluate("() => window.scrollTo(0, 0)")
                await page.screenshot(path=ARTIFACTS / "desktop.png", full_page=True)
                await doc_image(page, "dashboard-desktop.png")

                # A phone: one column, nothing wider than the screen, charts as wide as it.
                await page.set_viewport_size(PHONE)
                await page.wait_for_timeout(600)
                overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"the page is {overflow} px wider than a phone"
                widths = await page.evaluate("window.dashboard.charts.map(c => c.width)")
                assert all(200 <= w <= PHONE["width"] for w in widths), widths
                await page.evaluate("() => window.scrollTo(0, 0)")
                await page.screenshot(path=ARTIFACTS / "phone.png")
                await doc_image(page, "dashboard-phone.png")
                await page.screenshot(path=ARTIFACTS / "phone-full-page.png", full_page=True)

                assert all(u.startswith(base) for u in requests), [u for u in requests if not u.startswith(base)]
                assert not problems, problems
            assert gateway.detection is not None and gateway.detection.stats.scored > 0
    finally:
        node.stop()

    store = Store(state / "gatewayd.sqlite3", readonly=True)
    try:
        labelled = store.conn.execute("SELECT label FROM alerts WHERE id = ?", (edge_id,)).fetchone()
        operator = store.conn.execute("SELECT label, operator FROM labels WHERE alert_id = ?", (edge_id,)).fetchall()
        acknowledged = store.conn.execute(
            "SELECT acknowledged_ms, label FROM alerts WHERE id = ?", (model_id,)
        ).fetchone()
    finally:
        store.close()
    assert labelled == ("true_positive",)
    assert operator == [("true_positive", "ana")]
    assert acknowledged[0] is not None and acknowledged[1] is None
    figures["requests"] = len(requests)
    (ARTIFACTS / "figures.json").write_text(json.dumps(figures, indent=2))


async def test_history_in_chromium(tmp_path):
    """Two days in the store with four hours missing, and a device that does not answer: the
    page fits its span to the two days, draws them from minute summaries and says so, breaks the
    line at the gap, and says in plain words that the device is offline (no model is learning)
    and that the records stay on the gateway without a cloud."""
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    state = tmp_path / "state"
    now = now_ms()
    written = write_flow_history(state, now)
    port = free_port()
    config = (
        f'[gateway]\nname = "plant-6"\nstate_dir = "{state}"\n[detection]\nbootstrap_minutes = 0.5\n'
        f"[dashboard]\nenabled = true\nport = {port}\n"
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {free_port()}\n'
    )
    async with running_gateway(config), async_playwright() as playwright, chromium(playwright, DESKTOP) as page:
        problems = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.wait_for_function("() => window.dashboard && window.dashboard.updates >= 1", timeout=15_000)

        span = await page.evaluate(SPAN)
        assert span["chosen"] == "all" and span["resolution"] == "minutes" and span["from"] == int(written[0]), span
        assert "one-minute summaries" in span["note"], span
        title = await page.locator('[data-chart="flow"] .u-title').inner_text()
        assert "-minute means" in title, title
        gaps = await page.evaluate(DRAWN_AT_GAPS, ["flow"])
        assert len(gaps) == 1 and gaps[0] == 0, f"the line is drawn across the gap: {gaps}"
        gap_at = await page.evaluate(
            "(() => { const u = window.dashboard.charts.find((c) => c.key === 'flow'); "
            "return u.data[0][u.data[1].indexOf(null)] * 1000; })()"
        )
        assert now - 30 * HOUR_MS < gap_at < now - 26 * HOUR_MS
        drawn = await page.evaluate(DRAWN_POINTS, ["flow", 5])
        assert drawn["checked"] >= 20 and drawn["drawn"] >= 0.8 * drawn["checked"], drawn

        # Plain words: the device does not answer, so no model is learning; nothing waits for a cloud.
        node = page.locator('#node-list .card[data-device="pump-1"]')
        await node.locator(".badge.offline").wait_for(timeout=20_000)
        assert "device not answering" in await node.inner_text()
        scope = page.locator('#model-list .card[data-scope="pump-1"]')
        await scope.locator(".badge.offline", has_text="offline").wait_for(timeout=5_000)
        assert "collecting" not in await page.locator("#model-list").inner_text()
        uplink = await page.locator('#system-list [data-card="uplink"]').inner_text()
        assert "no cloud configured" in uplink and "kept locally" in uplink and "waiting" not in uplink, uplink

        # An hour: raw readings, broken where a minute is missing; a week: minute summaries again.
        await page.click('.spans button[data-span="3600"]')
        await page.wait_for_function("() => window.dashboard.series.resolution === 'raw'", timeout=5_000)
        gaps = await page.evaluate(DRAWN_AT_GAPS, ["flow"])
        assert len(gaps) == 1 and gaps[0] == 0, gaps
        await page.click('.spans button[data-span="604800"]')
        await page.wait_for_function(
            "() => window.dashboard.series.to_ms - window.dashboard.series.from_ms === 604800000", timeout=5_000
        )
        assert (await page.evaluate(SPAN))["resolution"] == "minutes"
        await page.screenshot(path=ARTIFACTS / "desktop-history.png", full_page=True)
        assert not problems, problems


async def test_login_in_chromium(tmp_path):
    """With a token, the page asks for it: a wrong one is refused, the right one shows the gateway."""
    from playwright.async_api import async_playwright

    token = tmp_path / "token"
    token.write_text("operators-token-0123456789\n")
    token.chmod(0o600)
    port = free_port()
    config = (
        f'[gateway]\nname = "plant-8"\nstate_dir = "{tmp_path / "state"}"\n[detection]\nenabled = false\n'
        f'[dashboard]\nenabled = true\nport = {port}\ntoken_file = "{token}"\n'
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {free_port()}\n'
    )
    async with running_gateway(config), async_playwright() as playwright, chromium(playwright, PHONE) as page:
        await page.goto(f"http://localhost:{port}/")
        await page.locator("#login").wait_for(state="visible", timeout=10_000)
        assert await page.locator("#nodes").is_hidden()
        await page.fill("#token", "not-the-token")
        await page.click("#login-form button")
        await page.get_by_text("wrong token").wait_for(timeout=5_000)
        await page.fill("#token", "operators-token-0123456789")
        await page.click("#login-form button")
        await page.locator('#node-list .card[data-device="pump-1"]').wait_for(timeout=10_000)
        assert await page.locator("#login").is_hidden() and await page.locator("#logout").is_visible()
        assert "plant-8" in await page.locator("#gateway-name").inner_text()
        cookies = await page.context.cookies()
        assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [("gatewayd_session", True, "Strict")]
        await page.click("#logout")
        await page.locator("#login").wait_for(state="visible", timeout=10_000)


async def test_a_store_fault_in_chromium(tmp_path):
    """A store that cannot be opened (its state directory cannot be created): a banner above the
    nodes says what is wrong and what goes on, the nodes are shown, the alerts and the charts say
    why they cannot be; once the store is back the banner goes. A clock step is a small note."""
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the state directory's parent should be")
    port = free_port()
    config = (
        f'[gateway]\nname = "plant-9"\nstate_dir = "{blocked / "state"}"\n[detection]\nenabled = false\n'
        f"[dashboard]\nenabled = true\nport = {port}\n"
    )
    # a device that answers and never alarms: no alert of its own waits for the store
    async with (
        quiet_meter() as meter,
        running_gateway(config + QUIET_METER.format(port=meter)) as gateway,
        async_playwright() as playwright,
    ):
        wall_ns = gateway.clock.wall_ns
        gateway.clock.wall_ns = lambda: wall_ns() + 7_200 * 10**9  # NTP sets the clock 2 h ahead
        async with chromium(playwright, DESKTOP) as page:
            problems = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            # (the 503 answers are logged to the console as failed loads: expected here)
            page.on(
                "console", lambda m: m.type == "error" and "status of 503" not in m.text and problems.append(m.text)
            )
            await page.goto(f"http://127.0.0.1:{port}/")
            banner = page.locator("#store-banner")
            await banner.wait_for(state="visible", timeout=15_000)
            assert await banner.get_attribute("data-state") == "unavailable"
            text = await banner.inner_text()
            for said in (
                "The store cannot be opened: nothing is written to disk",
                "Not a directory",
                "since",
                "readings dropped",
                "0 alert writes, written first once the store takes writes again",
                "Polling, detection, alerts and MQTT go on.",
            ):
                assert said in text, (said, text)

            node = page.locator('#node-list .card[data-device="pump-1"]')
            await node.wait_for()
            banner_box, node_box = await banner.bounding_box(), await node.bounding_box()
            assert banner_box is not None and node_box is not None and banner_box["y"] < node_box["y"]
            alerts = page.locator("#alert-list")
            await alerts.get_by_text("Alerts cannot be shown: the store cannot be read now").wait_for()
            await page.locator("#live-error", has_text="Readings cannot be shown").wait_for()
            assert "cannot be read now" in await page.locator('#system-list [data-card="store"]').inner_text()
            assert await page.locator("#connection").inner_text() == "live"  # the page is served, only the store is not
            clock = page.locator("#clock")
            await clock.filter(has_text="clock stepped +2.0 h").wait_for(timeout=10_000)
            await page.screenshot(path=ARTIFACTS / "desktop-store-fault.png", full_page=True)
            await page.set_viewport_size(PHONE)
            await page.wait_for_timeout(300)
            assert await page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
            await page.screenshot(path=ARTIFACTS / "phone-store-fault.png")

            blocked.unlink()  # the directory can be created: the store comes back by itself
            await banner.wait_for(state="hidden", timeout=30_000)
            await alerts.get_by_text("No alerts.").wait_for(timeout=10_000)
            await page.locator("#live-error").wait_for(state="hidden", timeout=10_000)
            assert gateway.worker.health.state == "ok"
            assert not problems, problems
