// The gateway's dashboard: polls the gateway's JSON API and draws it. No framework; the
// charts are uPlot (vendored). Everything shown comes from /api/* on the same origin.
"use strict";

const HOUR_MS = 3_600_000;
const COLORS = ["#1f5fbf", "#0f8a7e", "#8e44ad", "#b35c00", "#2c3e50", "#c0392b"];
const SCORE_COLORS = { ratio: "#1d2330", iforest_ratio: "#1f5fbf", autoencoder_ratio: "#0f8a7e",
                       pca_ratio: "#8e44ad", alarm: "#c62828", critical: "#7b1010" };
const SPAN_KEY = "gatewayd.span";  // the operator's span choice, kept in the browser; none: fit the data
// A span drawn from minute summaries changes once a minute: asked for less often than the rest.
const MINUTES_REFRESH_MS = 15_000;

// What the page holds, also for tests and curious operators (window.dashboard in a console).
const state = {
  overview: null, alerts: [], deviceAlerts: [], series: null, device: null, zoom: null,
  charts: [], chartKeys: "", refreshS: 2, timer: null, loggedIn: true,
  spanS: Number(localStorage.getItem(SPAN_KEY)) || null,  // null: from the first reading (the API fits it)
  scoreScale: null, seriesAt: 0, refreshing: false, again: false, updates: 0,
};
window.dashboard = state;

// -- small helpers ---------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  return Math.abs(value) >= 1e5 ? value.toExponential(2) : Number(value.toPrecision(digits)).toString();
}

// A length of time in round words: "40 s", "12 min", "2.5 h", "3 days".
function duration(ms) {
  const s = ms / 1000;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Number((s / 3600).toFixed(1))} h`;
  return `${Math.round(s / 86400)} days`;
}

function count(n, noun) { return `${n} ${noun}${n === 1 ? "" : "s"}`; }

function time(ms) { return ms ? new Date(ms).toLocaleString() : "–"; }

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(0)} kB`;
}

function meter(used, total) {
  const share = total ? Math.min(1, Math.max(0, used / total)) : 0;
  const fill = el("span");
  fill.style.width = `${(share * 100).toFixed(1)}%`;  // CSSOM: allowed by the page's CSP, a style attribute is not
  return el("div", { class: "meter" + (share >= 0.95 ? " full" : share >= 0.75 ? " high" : ""),
                     title: `${Math.round(share * 100)}%` }, fill);
}

// Rows of [term, value, class]; class "secondary" hides a row on a phone.
function definitions(rows) {
  return el("dl", {}, rows.filter(Boolean).flatMap(([term, value, cls]) => [el("dt", { class: cls }, term),
                                                                             el("dd", { class: cls }, value)]));
}

function compact(value) {
  if (value === null || value === undefined) return "";  // a tick uPlot leaves out
  return Math.abs(value) >= 1000 ? new Intl.NumberFormat("en", { notation: "compact" }).format(value)
                                 : String(Number(value.toPrecision(6)));
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (response.status === 401 && path !== "/api/login") showLogin();
  if (!response.ok) {
    const error = new Error((body && body.error) || `HTTP ${response.status}`);
    error.status = response.status;  // 503: the store cannot be read or written now
    throw error;
  }
  return body;
}

// -- login -----------------------------------------------------------------------------

function showLogin() {
  state.loggedIn = false;
  document.getElementById("login").hidden = false;
  for (const id of ["store-banner", "nodes", "live", "alerts", "models", "system"]) document.getElementById(id).hidden = true;
  setConnection("login needed", "error");
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("login-error");
  error.textContent = "";
  try {
    await api("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
                              body: JSON.stringify({ token: document.getElementById("token").value }) });
    location.reload();
  } catch (e) { error.textContent = e.message; }
});

document.getElementById("logout").addEventListener("click", async () => {
  await api("/api/logout", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
  location.reload();
});

// -- operator feedback -----------------------------------------------------------------

const operatorInput = document.getElementById("operator");
operatorInput.value = localStorage.getItem("gatewayd.operator") || "";
operatorInput.addEventListener("change", () => localStorage.setItem("gatewayd.operator", operatorInput.value.trim()));

// The same command as on the MQTT command topic and `gatewayd alert ack|label`.
async function sendCommand(command) {
  const message = document.getElementById("feedback-message");
  const operator = operatorInput.value.trim();
  if (operator) command.operator = operator;
  try {
    const result = await api("/api/command", { method: "POST", headers: { "Content-Type": "application/json" },
                                               body: JSON.stringify(command) });
    message.textContent = result.result;
    message.className = "muted";
  } catch (e) {
    message.textContent = e.message;
    message.className = "error";
  }
  await refresh();  // the list and the counts changed: show them now
}

// -- rendering: the store's and the clock's state ------------------------------------------

// A store fault by its kind (gatewayd/store/faults.py): what is wrong, and what to do about it.
const STORE_FAULTS = {
  disk_full: ["The disk is full", "Free some space on it, or lower store.disk_budget_mb."],
  read_only: ["The store's file system is read-only",
              "It was probably remounted read-only after errors: check the card or disk; the store is reopened until it can write."],
  io_error: ["The store's disk reports I/O errors", "The store is reopened until writes work; a failing SD card should be replaced."],
  locked: ["The store is locked by another process", "Another program holds a write lock on the database (an sqlite3 shell?)."],
  corrupt: ["The store's database file is damaged", "It must be recovered by hand; the store is tried again every minute."],
  unavailable: ["The store cannot be opened", "Check that the state directory exists and that gatewayd may write it; opening is retried."],
};

function storeFaulty(store) { return store.state !== "ok" && store.state !== "starting"; }

function renderStoreBanner(overview) {
  const store = overview.store;
  const banner = document.getElementById("store-banner");
  banner.hidden = !storeFaulty(store);
  if (banner.hidden) { banner.replaceChildren(); return; }
  const [what, todo] = STORE_FAULTS[store.state] || [`The store: ${store.state}`, ""];
  // Writing by evicting (a full file system, the store still takes writes) is a warning; a store
  // that takes no writes is an error.
  banner.className = "banner " + (store.writing ? "warning" : "critical");
  banner.dataset.state = store.state;
  banner.replaceChildren(
    el("h2", {}, el("span", { class: "badge " + (store.writing ? "warning" : "critical") }, store.state.replace("_", " ")),
       store.writing ? `${what}: the store goes on writing by evicting its oldest readings`
                     : `${what}: nothing is written to disk`),
    store.last_error ? el("p", { class: "detail" }, store.last_error) : null,
    definitions([
      store.writing ? null : ["since", `${time(store.since_ms)} (${ago(store.since_ms)})`],
      // (while it writes by evicting, these are only of interest when they are not zero)
      store.writing && !store.readings_dropped ? null
        : ["readings dropped", `${store.readings_dropped} (polled while the store could not take them)`],
      store.writing && !store.writes_waiting && !store.writes_dropped ? null
        : ["waiting in memory", `${store.writes_waiting} alert writes, written first once the store takes writes again`
                                + (store.writes_dropped ? ` (${store.writes_dropped} lost: too many waited)` : "")],
      store.emergency_evictions ? ["emergency evictions", String(store.emergency_evictions)] : null,
    ]),
    el("p", {}, "Polling, detection, alerts and MQTT go on. " + todo));
}

function signed(seconds) {
  const a = Math.abs(seconds), sign = seconds < 0 ? "−" : "+";
  return sign + (a < 90 ? `${a.toFixed(1)} s` : a < 5400 ? `${(a / 60).toFixed(0)} min`
                 : a < 172800 ? `${(a / 3600).toFixed(1)} h` : `${(a / 86400).toFixed(0)} days`);
}

// Small, in the header: whether readings' times can be trusted.
function renderClock(overview) {
  const clock = overview.clock;
  const note = document.getElementById("clock");
  const parts = [];
  if (!clock.synchronized) parts.push("clock not synchronised: readings marked");
  if (clock.steps) parts.push(`clock stepped ${signed(clock.last_step_s)}` + (clock.steps > 1 ? ` (${clock.steps} steps)` : ""));
  note.hidden = !parts.length;
  note.textContent = parts.join("; ");
  note.title = parts.length ? "The gateway's wall clock, which stamps readings. Until NTP (or another time source) "
    + "has set it, readings are marked as taken before the clock was trusted; a step moves the stamps, "
    + "never the windows or the schedules." : "";
}

// -- rendering: nodes, alerts, models, store -------------------------------------------

function setConnection(text, kind) {
  const badge = document.getElementById("connection");
  badge.textContent = text;
  badge.className = "badge " + kind;
}

// A scope's model in plain words: its version, or how far the gateway has come towards its
// first one; a scope whose devices all do not answer collects nothing, so it says that.
function modelState(scope, devices) {
  if (scope && scope.version) return { badge: "online", short: `v${scope.version}`, words: `v${scope.version}` };
  if (devices.length && devices.every((d) => d.state === "offline")) {
    return { badge: "offline", short: "offline", words: "none yet: device not answering" };
  }
  if (!scope) return { badge: "connecting", short: "none yet", words: "none yet" };
  if (scope.training) return { badge: "connecting", short: "training", words: "training the first model now" };
  return { badge: "connecting", short: "learning",
           words: `learning normal behaviour: first model after ${duration(scope.bootstrap_ms)} of data `
                  + `(${duration(scope.collected_ms)} so far)` };
}

// Where a bundle came from; the gateway's own trainings name their reason ("gateway:REASON").
function modelSource(source) {
  const own = /^gateway:(.*)$/.exec(source || "");
  if (!own) return source || "–";
  const reason = own[1];
  if (reason.startsWith("bootstrap")) return "trained on this gateway from its first normal data";
  if (reason.startsWith("drift in ")) return `retrained on this gateway after drift in ${reason.slice(9)}`;
  if (reason.endsWith(" retraining")) return `retrained on this gateway from recent normal data (${reason.slice(0, -11)})`;
  return `trained on this gateway (${reason})`;
}

function renderNodes(overview) {
  const list = document.getElementById("node-list");
  const scopes = (overview.detection && overview.detection.scopes) || {};
  list.replaceChildren(...overview.devices.map((d) => {
    const values = Object.entries(d.values).map(([channel, v]) => `${channel} ${fmt(v.value)} ${v.unit}`.trim());
    return el("div", { class: "card clickable" + (d.name === state.device ? " selected" : ""), "data-device": d.name,
                       onclick: () => selectDevice(d.name) },
      el("h3", {}, d.name, el("span", { class: "badge " + d.state }, d.state),
         d.incident_open ? el("span", { class: "badge critical" }, "anomaly") : null),
      definitions([
        ["address", d.address, "secondary"],
        ["polls", `${d.polls} (${d.readings} readings, ${d.skipped_ticks} skipped)`, "secondary"],
        d.consecutive_failures ? ["failures", `${d.consecutive_failures} in a row`] : null,
        d.last_error && d.state !== "online" ? ["last error", d.last_error] : null,
        ["model", modelState(scopes[d.scope], [d]).words, "secondary"],
        ["now", values.join(", ") || "–"],
      ]));
  }));
  const select = document.getElementById("device-select");
  const names = overview.devices.map((d) => d.name);
  if (select.options.length !== names.length || [...select.options].some((o, i) => o.value !== names[i])) {
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  }
  if (!state.device || !names.includes(state.device)) state.device = names[0] || null;
  select.value = state.device;
  const filter = document.getElementById("alert-device");
  if (filter.options.length !== names.length + 1) {
    const chosen = filter.value;
    filter.replaceChildren(el("option", { value: "" }, "all devices"), ...names.map((n) => el("option", { value: n }, n)));
    filter.value = chosen;
  }
}

function why(alert) {
  const d = alert.detail || {};
  const parts = [];
  if (alert.channels.length) parts.push(`channels: ${alert.channels.join(", ")}`);
  if (d.top_features && d.top_features.length) {
    parts.push("features: " + d.top_features.map(([f, v]) => `${f} (${fmt(v, 3)})`).join(", "));
  }
  if (d.checks) parts.push(`node checks: ${d.checks.join(", ") || "–"}, value ${fmt(d.value)}`);
  if (d.peak_ratio !== undefined) parts.push(`peak score ${fmt(d.peak_ratio, 3)} over ${d.windows} windows`);
  if (d.change) parts.push(`drift: ${d.change}`);
  if (d.bundle) parts.push(`model ${d.bundle}`);
  return parts.join(" · ");
}

const LABEL_NAMES = { true_positive: "real anomaly", false_positive: "false alarm", missed: "missed anomaly" };

function renderAlerts(alerts, error = null) {
  const list = document.getElementById("alert-list");
  if (error) { list.replaceChildren(el("p", { class: "error" }, `Alerts cannot be shown: ${error}`)); return; }
  if (!alerts.length) { list.replaceChildren(el("p", { class: "muted" }, "No alerts.")); return; }
  list.replaceChildren(...alerts.map((a) => {
    const open = a.closed_ms === null && a.kind === "model";
    const actions = [];
    if (!a.acknowledged_ms) {
      actions.push(el("button", { type: "button", class: "ack", onclick: () => sendCommand({ command: "ack", alert: a.id }) },
                      "Acknowledge"));
    }
    if (!a.label) {
      actions.push(
        el("button", { type: "button", class: "real", onclick: () => sendCommand({ command: "label", alert: a.id, label: "true" }) },
           "Real anomaly"),
        el("button", { type: "button", class: "false", onclick: () => sendCommand({ command: "label", alert: a.id, label: "false" }) },
           "False alarm"));
    }
    return el("article", { class: `alert ${a.severity}` + (a.label ? " done" : ""), "data-alert-id": a.id },
      el("header", {},
         el("span", { class: "badge " + a.severity }, a.severity),
         el("strong", {}, a.device), el("span", {}, a.kind),
         el("span", { class: "muted" }, time(a.opened_ms)),
         el("span", { class: "muted" }, open ? "open" : a.closed_ms ? `closed ${time(a.closed_ms)}` : ""),
         a.label ? el("span", { class: "badge info label" }, LABEL_NAMES[a.label] || a.label)
                 : a.acknowledged_ms ? el("span", { class: "badge" }, "acknowledged") : null),
      el("div", { class: "why" }, why(a)),
      actions.length ? el("div", { class: "actions" }, actions) : null);
  }));
}

function renderModels(overview) {
  const list = document.getElementById("model-list");
  const detection = overview.detection;
  if (!detection) { list.replaceChildren(el("p", { class: "muted" }, "Detection is off ([detection] enabled = false).")); return; }
  const cards = Object.entries(detection.scopes).map(([name, s]) => {
    const model = modelState(s, overview.devices.filter((d) => s.devices.includes(d.name)));
    return el("div", { class: "card", "data-scope": name },
    el("h3", {}, name, el("span", { class: "badge " + model.badge }, model.short)),
    definitions([
      ["devices", s.devices.join(", ")],
      s.version ? ["source", modelSource(s.source)] : ["model", model.words],
      ["created", s.created || "–"],
      ["threshold ×", fmt(s.multiplier, 3)],
      ["normal windows", String(s.collected)],
      s.probation ? ["probation", `${s.probation} windows left`] : null,
      s.rolled_back.length ? ["rolled back", s.rolled_back.map((v) => `v${v}`).join(", ")] : null,
    ]));
  });
  for (const [device, d] of Object.entries(detection.devices)) {
    const levels = Object.entries(d.drift).filter(([, v]) => v !== null).sort((a, b) => b[1] - a[1]);
    const rows = levels.slice(0, 4).map(([stream, level]) => [stream, el("span", {}, meter(level, 1), `${Math.round(level * 100)}% of drift`)]);
    cards.push(el("div", { class: "card drift", "data-device": device },
      el("h3", {}, `${device} drift`),
      rows.length ? definitions(rows) : el("p", { class: "muted" }, Object.keys(d.drift).length ? "measuring the streams" : "no model yet")));
  }
  cards.push(el("div", { class: "card" }, el("h3", {}, "Windows"), definitions([
    ["windows", String(detection.windows)], ["scored", String(detection.scored)],
    ["incidents", String(detection.incidents)], ["trainings", String(detection.trainings)],
    ["drift events", String(detection.drift_events)], ["errors", String(detection.errors)],
  ])));
  list.replaceChildren(...cards);
}

function renderSystem(overview) {
  const { store, uplink, queues } = overview;
  const evictions = store.evictions && Object.entries(store.evictions).map(([kind, e]) => `${kind}: ${e.rows} rows` + (e.readings ? ` (${e.readings} readings)` : ""));
  const unread = "–";  // the store could not be read: unknown, not zero
  const cards = [
    el("div", { class: "card", "data-card": "store" },
      el("h3", {}, "Store", el("span", { class: "badge " + (storeFaulty(store) ? (store.writing ? "warning" : "critical") : "online") },
                               store.state.replace("_", " "))),
      definitions([
        ["disk", el("span", {}, meter(store.disk_bytes, store.budget_bytes), `${bytes(store.disk_bytes)} of ${bytes(store.budget_bytes)}`)],
        ["in use", store.data_bytes === null ? unread : `${bytes(store.data_bytes)} of readings, alerts and the outbox`, "secondary"],
        ["evictions", evictions ? evictions.join(", ") || "none" : unread],
        ["written", `${queues.readings.written} readings this run`],
        store.readings_dropped ? ["dropped", `${store.readings_dropped} readings while the store could not take them`] : null,
        store.writes_waiting ? ["waiting", `${store.writes_waiting} alert writes in memory`] : null,
        store.faults ? ["faults", `${store.faults} this run, ${store.recoveries} recovered`
                                  + (store.last_outage_s !== null ? `, the last after ${fmt(store.last_outage_s, 3)} s` : "")] : null,
        store.read_error ? ["read", el("span", { class: "error" }, `cannot be read now: ${store.read_error}`)] : null,
        ["files", store.path, "secondary"],
      ])),
    el("div", { class: "card" }, el("h3", {}, "Queues"), definitions([
      ["to the store", el("span", {}, meter(queues.readings.queued, queues.readings.capacity), `${queues.readings.queued} of ${queues.readings.capacity} readings`)],
      queues.detection ? ["to detection", `${queues.detection.queued} of ${queues.detection.capacity} polls, ${queues.detection.dropped} dropped`] : null,
      queues.mqtt ? ["MQTT", `${queues.mqtt.connected ? "connected" : "disconnected"}, ${queues.mqtt.queued} queued, ${queues.mqtt.backlogged} kept in the store, ${queues.mqtt.dropped} dropped`]
                  : ["MQTT", "not configured"],
    ])),
    el("div", { class: "card", "data-card": "uplink" }, el("h3", {}, "Uplink"), definitions(!uplink.configured ? [
      // without a cloud nothing waits: the records stay in the store, the outbox keeps them for one later
      ["cloud", "no cloud configured"],
      ["kept locally", uplink.pending ? `${count(uplink.pending.alerts + uplink.pending.labels, "record")} (${count(uplink.pending.alerts, "alert record")}, `
                                        + `${count(uplink.pending.labels, "label")})` : unread],
    ] : [
      ["cloud", uplink.agent_seen === null ? "configured" :
                uplink.agent_seen ? "cloud-sync has run" : "configured, cloud-sync not seen yet"],
      ["last upload", uplink.last_upload_ms ? `${ago(uplink.last_upload_ms)} (${time(uplink.last_upload_ms)})` : uplink.agent_seen === null ? unread : "never"],
      ["waiting to upload", uplink.pending ? `${uplink.pending.alerts} alert records, ${uplink.pending.labels} labels` : unread],
      uplink.bytes_today !== null && uplink.bytes_today !== undefined ? ["today", bytes(uplink.bytes_today)] : null,
    ])),
  ];
  document.getElementById("system-list").replaceChildren(...cards);
  const a = overview.alerts;
  document.getElementById("alert-counts").textContent = a ? `${a.unacknowledged} to acknowledge, ${a.unlabelled} unlabelled, ${a.total} in all` : "";
}

// -- charts ------------------------------------------------------------------------------

function chartWidth() {
  return Math.max(240, document.getElementById("chart-list").clientWidth);
}

// The score chart is taller: it carries the alarm level's lines and, on a log axis, several decades.
function chartHeight(key = null) { return (window.innerWidth < 600 ? 140 : 170) + (key === "score" ? 50 : 0); }

// Alerts of the device as shaded bands (an alert that never closes: a thin mark at its start).
function alertBands(u) {
  const ctx = u.ctx;
  const { left, top, width, height } = u.bbox;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  for (const a of state.deviceAlerts) {
    if (a.device !== state.device) continue;
    const x0 = u.valToPos(a.opened_ms / 1000, "x", true);
    const end = a.closed_ms || (a.kind === "model" ? Date.now() : null);
    const x1 = end ? u.valToPos(end / 1000, "x", true) : x0 + 3 * devicePixelRatio;
    ctx.fillStyle = a.severity === "critical" ? "rgba(198, 40, 40, 0.16)" : a.severity === "info" ? "rgba(31, 95, 191, 0.12)" : "rgba(179, 92, 0, 0.14)";
    ctx.fillRect(x0, top, Math.max(x1 - x0, 2 * devicePixelRatio), height);
  }
  ctx.restore();
}

function xRange() {
  if (state.zoom) return [state.zoom.from / 1000, state.zoom.to / 1000];
  const s = state.series;
  return s ? [s.from_ms / 1000, s.to_ms / 1000] : [Date.now() / 1000 - 3600, Date.now() / 1000];
}

function chartOptions(title, series, yScale, yAxis = {}) {
  return {
    title, width: chartWidth(), height: chartHeight(),
    cursor: { sync: { key: "device" }, drag: { x: true, y: false, setScale: false } },
    // x is set by drawSeries (the live span or the zoom), never from the data's extent
    scales: { x: { time: true, auto: false, range: (u, min, max) => [min, max] }, y: yScale || {} },
    series: [{}, ...series],
    axes: [{ space: 70 }, { size: 50, values: (u, ticks) => ticks.map(compact), ...yAxis }],
    hooks: {
      draw: [alertBands],
      setSelect: [(u) => {
        if (u.select.width < 4) return;
        const from = u.posToVal(u.select.left, "x") * 1000;
        const to = u.posToVal(u.select.left + u.select.width, "x") * 1000;
        u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
        zoomTo(from, to);
      }],
    },
  };
}

// -- the score's axis ----------------------------------------------------------------------

// The score is a ratio to the alarm level, never negative. While the scores stay within two
// decades the axis is linear from 0; past that (an anomaly at 30 next to normal windows at
// 0.1) it is logarithmic with a tick per decade, and its floor is a decade, not 0.
function scoreScale(series) {
  const s = series.scores;
  const all = ["ratio", "iforest_ratio", "autoencoder_ratio", "pca_ratio"].flatMap((k) => values(s[k]));
  const positive = all.filter((v) => v !== null && v > 0).sort((a, b) => a - b);
  const hi = Math.max(s.critical * 1.25, positive.length ? positive[positive.length - 1] : 0);
  const lo = positive.length ? positive[Math.floor(positive.length * 0.02)] : 1;
  if (hi / lo < 100) return { log: false, min: 0, max: hi * 1.05 };
  const floor = Math.min(-1, Math.max(-3, Math.floor(Math.log10(lo))));  // 0.001 .. 0.1: the alarm level clear of it
  return { log: true, min: 10 ** floor, max: 10 ** Math.ceil(Math.log10(hi)) };
}

// Ticks of a log axis: decades, every one while they have room (about 22 px each), else every
// second or third, always with 1 (the alarm level) among them.
function decades(u, axis, min, max) {
  const lo = Math.round(Math.log10(min)), hi = Math.round(Math.log10(max));
  const room = Math.max(2, Math.floor((u.bbox.height / devicePixelRatio || u.height * 0.6) / 22));
  const step = Math.max(1, Math.ceil((hi - lo) / room));
  const out = [];
  for (let e = lo; e <= hi; e++) if (e % step === 0) out.push(10 ** e);
  return out;
}

// The alarm level (1) and the critical ratio as labelled dashed lines across the score chart.
function levelLines(u) {
  const s = state.series && state.series.scores;
  if (!s) return;
  const { left, top, width, height } = u.bbox;
  const ctx = u.ctx;
  ctx.save();
  ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
  ctx.textAlign = "right";
  ctx.lineWidth = devicePixelRatio;
  const pad = 3 * devicePixelRatio;
  for (const [value, text, color, dash, below] of [[s.alarm, "alarm level 1", SCORE_COLORS.alarm, [6, 4], true],
                                                   [s.critical, `critical ${fmt(s.critical, 3)}`, SCORE_COLORS.critical, [2, 4], false]]) {
    const y = Math.round(u.valToPos(value, "y", true)) + (devicePixelRatio % 2) / 2;  // on a pixel row: crisp, not smeared over two
    if (y < top || y > top + height) continue;
    ctx.strokeStyle = color;
    ctx.setLineDash(dash.map((d) => d * devicePixelRatio));
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + width, y);
    ctx.stroke();
    // the critical level's label above its line, the alarm level's below: they stay apart on a log axis
    ctx.textBaseline = below ? "top" : "bottom";
    const right = left + width - pad, textY = below ? y + pad : y - pad;
    const w = ctx.measureText(text).width, h = 12 * devicePixelRatio;
    ctx.fillStyle = "rgba(255, 255, 255, 0.8)";
    ctx.fillRect(right - w - pad, below ? textY - 1 : textY - h, w + 2 * pad, h + 1);
    ctx.fillStyle = color;
    ctx.fillText(text, right, textY);
  }
  ctx.restore();
}

// -- building and feeding the charts -------------------------------------------------------

// "one-minute means" or "15-minute means": what a point of a span drawn from summaries is.
function pointWords(series) {
  const minutes = Math.round(series.point_ms / 60000);
  return minutes === 1 ? "one-minute means" : `${minutes}-minute means`;
}

function buildCharts(series) {
  for (const c of state.charts) c.destroy();
  state.charts = [];
  const list = document.getElementById("chart-list");
  list.replaceChildren();
  const scoreBox = el("div", { class: "chart", "data-chart": "score" }, el("p", { class: "empty", hidden: true }));
  list.append(scoreBox);
  const scale = state.scoreScale;
  const span = series.to_ms - series.from_ms;
  const options = chartOptions(
    "anomaly score (1 = alarm level" + (scale.log ? ", log scale)" : ")") + (span > HOUR_MS ? " · the gateway keeps the last hour" : ""), [
      // the models' own ratios first: the combined score, drawn after them, stays on top where
      // it equals one of them (with the default rule it is the PCA's)
      { label: "iforest", stroke: SCORE_COLORS.iforest_ratio, width: 1 },
      { label: "autoencoder", stroke: SCORE_COLORS.autoencoder_ratio, width: 1 },
      { label: "pca", stroke: SCORE_COLORS.pca_ratio, width: 1 },
      { label: "score", stroke: SCORE_COLORS.ratio, width: 2 },
    ],
    { ...(scale.log ? { distr: 3, log: 10 } : {}), range: () => [state.scoreScale.min, state.scoreScale.max] },
    { label: "score ÷ alarm level", labelSize: 16, labelFont: "11px system-ui, sans-serif", size: 46, ...(scale.log ? { splits: decades, filter: (u, splits) => splits } : {}) });
  options.height = chartHeight("score");
  options.hooks.draw.push(levelLines);
  const score = new uPlot(options, scoreData(series), scoreBox);
  score.key = "score";
  score.scaleKind = scale.log ? "log" : "linear";
  state.charts.push(score);
  series.channels.forEach((channel, i) => {
    const box = el("div", { class: "chart", "data-chart": channel.name });
    list.append(box);
    const stroke = COLORS[i % COLORS.length];
    const lines = [{ label: channel.name, stroke, width: 1.5 }];
    if (series.resolution === "minutes") {
      // each point's lowest and highest reading as a pale band: a short spike stays visible
      lines.push({ label: "lowest", stroke: stroke + "55", width: 1 }, { label: "highest", stroke: stroke + "55", width: 1 });
    }
    const options = chartOptions(`${channel.name}${channel.unit ? ` (${channel.unit})` : ""}`
                                 + (series.resolution === "minutes" ? ` · ${pointWords(series)}` : ""), lines);
    if (series.resolution === "minutes") options.bands = [{ series: [3, 2], fill: stroke + "22" }];
    const u = new uPlot(options, channelData(channel), box);
    u.key = channel.name;
    u.stroke = stroke;
    state.charts.push(u);
  });
  state.chartKeys = chartKeys(series);
  for (const u of state.charts) {
    u.over.addEventListener("dblclick", () => { state.zoom = null; refreshSeries().catch(showError); });
  }
}

// What a chart is built for: another device, resolution or score axis needs new charts.
function chartKeys(series) {
  return [series.device, series.resolution, series.point_ms, series.to_ms - series.from_ms > HOUR_MS,
          state.scoreScale.log, series.channels.map((c) => c.name).join(",")].join("|");
}

// The API sends series as base64 of little-endian arrays: times as int32 ms after from_ms,
// values as float32 with NaN where missing (uPlot wants null there). A gap in the data comes
// as a missing point, so the line breaks there.
function unpack(text, Type) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return new Type(bytes.buffer);
}

function times(text, fromMs) { return Array.from(unpack(text, Int32Array), (t) => (fromMs + t) / 1000); }

function values(text) { return Array.from(unpack(text, Float32Array), (v) => (Number.isFinite(v) ? v : null)); }

function channelData(channel) {
  const data = [times(channel.ts, state.series.from_ms), values(channel.values)];
  if (state.series.resolution === "minutes") data.push(values(channel.min), values(channel.max));
  return data;
}

function scoreData(series) {
  const s = series.scores;
  const floor = state.scoreScale.log ? state.scoreScale.min : -Infinity;  // a log axis has no 0: the floor stands for less
  const ratios = (text) => values(text).map((v) => (v === null ? null : Math.max(v, floor)));
  return [times(s.ts, series.from_ms), ratios(s.iforest_ratio), ratios(s.autoencoder_ratio), ratios(s.pca_ratio), ratios(s.ratio)];
}

function drawSeries(series) {
  state.series = series;
  state.scoreScale = scoreScale(series);
  if (chartKeys(series) !== state.chartKeys || state.charts.length === 0) buildCharts(series);
  const [from, to] = xRange();
  for (const u of state.charts) {
    if (u.key === "score") u.setData(scoreData(series));
    else u.setData(channelData(series.channels.find((c) => c.name === u.key)));
    u.setScale("x", { min: from, max: to });  // also where a chart has no data in the span
  }
  const empty = document.querySelector('[data-chart="score"] .empty');
  const model = state.overview && state.overview.devices.find((d) => d.name === series.device);
  empty.hidden = series.scores.count > 0;
  empty.textContent = model && model.model_version ? "No window scored in this range."
    : "No model yet: the gateway learns normal behaviour first, then trains one (Models and drift, below).";
}

async function refreshSeries(always = true) {
  if (!state.device) return;
  // minute summaries change once a minute: the live refresh asks for them less often
  if (!always && state.series && state.series.resolution === "minutes" && state.series.device === state.device
      && Date.now() - state.seriesAt < MINUTES_REFRESH_MS) return;
  const points = Math.round(chartWidth());
  const to = Date.now();
  // no `from` while the operator has not chosen a span: the gateway fits it to the data
  const range = state.zoom ? `&from=${Math.floor(state.zoom.from)}&to=${Math.ceil(state.zoom.to)}`
              : state.spanS ? `&from=${to - state.spanS * 1000}&to=${to}` : `&to=${to}`;
  const problem = document.getElementById("live-error");
  let series;
  try {
    series = await api(`/api/devices/${encodeURIComponent(state.device)}/series?points=${points}${range}`);
  } catch (e) {
    if (e.status !== 503) throw e;
    problem.hidden = false;  // the charts keep what they last drew
    problem.textContent = `Readings cannot be shown: ${e.message}`;
    return;
  }
  problem.hidden = true;
  if (series.device !== state.device) return;  // the operator picked another one meanwhile
  state.seriesAt = Date.now();
  drawSeries(series);
  const note = document.getElementById("zoom-note");
  note.hidden = !state.zoom;
  note.textContent = state.zoom ? `Zoomed: ${time(state.zoom.from)} to ${time(state.zoom.to)} (live updates paused; double-click to resume)` : "";
  const shown = document.getElementById("span-note");
  shown.textContent = `${state.spanS || state.zoom ? "" : "all data: "}${duration(series.to_ms - series.from_ms)}`
    + (series.resolution === "minutes" ? `, drawn from ${pointWords(series)} of the store's one-minute summaries` : "");
}

function zoomTo(from, to) {
  if (to - from < 1000) return;
  state.zoom = { from, to };
  refreshSeries().catch(showError);
}

function selectDevice(name) {
  state.device = name;
  state.zoom = null;
  document.getElementById("device-select").value = name;
  for (const card of document.querySelectorAll("#node-list .card")) card.classList.toggle("selected", card.dataset.device === name);
  refreshAlerts().then(refreshSeries).catch(showError);
}

document.getElementById("device-select").addEventListener("change", (e) => selectDevice(e.target.value));

function markSpan() {
  for (const b of document.querySelectorAll(".spans button")) {
    b.classList.toggle("chosen", (Number(b.dataset.span) || null) === state.spanS);
  }
}

// The operator's span wins over the fitted one, also after a reload; "all" goes back to fitting.
for (const button of document.querySelectorAll(".spans button")) {
  button.addEventListener("click", () => {
    state.spanS = Number(button.dataset.span) || null;
    if (state.spanS) localStorage.setItem(SPAN_KEY, String(state.spanS));
    else localStorage.removeItem(SPAN_KEY);
    state.zoom = null;
    markSpan();
    refreshSeries().catch(showError);
  });
}
markSpan();

let resizePending = null;
window.addEventListener("resize", () => {
  clearTimeout(resizePending);
  resizePending = setTimeout(() => {
    for (const u of state.charts) u.setSize({ width: chartWidth(), height: chartHeight(u.key) });
  }, 150);
});

// -- the refresh loop ----------------------------------------------------------------------

async function refreshAlerts() {
  const which = document.getElementById("alert-which").value;
  const device = document.getElementById("alert-device").value;
  const query = new URLSearchParams({ limit: "50" });
  if (which === "unacknowledged") query.set("unacknowledged", "1");
  else if (which) query.set("kinds", which);
  if (device) query.set("device", device);
  let shown, shaded;
  try {
    [shown, shaded] = await Promise.all([
      api(`/api/alerts?${query}`),
      state.device ? api(`/api/alerts?limit=50&device=${encodeURIComponent(state.device)}`) : [],
    ]);
  } catch (e) {
    if (e.status !== 503) throw e;
    renderAlerts([], e.message);  // the store cannot be read: say so, the rest of the page goes on
    return;
  }
  state.alerts = shown;
  state.deviceAlerts = shaded;  // the charts shade the chosen device's alerts, whatever the list shows
  renderAlerts(shown);
  for (const u of state.charts) u.redraw(false, false);
}

for (const id of ["alert-which", "alert-device"]) {
  document.getElementById(id).addEventListener("change", () => refreshAlerts().catch(showError));
}

function showError(e) {
  if (state.loggedIn) setConnection("no answer", "error");
  document.getElementById("updated").textContent = e.message;
}

// One refresh at a time: asked for while one runs, the next starts as soon as it ends.
async function refresh() {
  if (state.refreshing) { state.again = true; return; }
  state.refreshing = true;
  clearTimeout(state.timer);
  try {
    const overview = await api("/api/overview");
    state.overview = overview;
    state.refreshS = overview.refresh_s;
    document.getElementById("gateway-name").textContent = overview.gateway;
    document.title = `${overview.gateway} · gatewayd`;
    document.getElementById("logout").hidden = !overview.token_required;
    renderStoreBanner(overview);
    renderClock(overview);
    renderNodes(overview);
    renderModels(overview);
    renderSystem(overview);
    await refreshAlerts();
    if (!state.zoom) await refreshSeries(false);
    setConnection("live", "live");
    document.getElementById("updated").textContent = `updated ${new Date(overview.ts_ms).toLocaleTimeString()}`;
    state.updates += 1;
  } catch (e) {
    showError(e);
  } finally {
    state.refreshing = false;
  }
  if (state.loggedIn) state.timer = setTimeout(refresh, state.again ? 0 : state.refreshS * 1000);
  state.again = false;
}

refresh();
