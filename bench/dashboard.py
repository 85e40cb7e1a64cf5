"""What the dashboard costs the daemon: RSS with the dashboard off (the reference), on with no
page open, and on with a page open, each a `gatewayd run` process polling the same virtual nodes
in the same run; the API's latency as a page calls it; and what importing the web server adds.

    .venv/bin/python bench/dashboard.py [--nodes 3] [--interval 0.1] [--seconds 60]

Both stores start with an hour of history for every channel at the poll interval, so the charts
decode a full hour. With the dashboard on, a client does what an open page does every 2 s: the
overview, the alert list and an hour of one device's charts (1000 points per chart); it also
loads the page once. RSS is the median of samples over the second half of each run. Last line:
a JSON object. aiohttp's import cost is printed when it is installed (it is not a dependency).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatewayd.store.database import Reading, Store  # noqa: E402
from gatewayd.demo.virtual_node import VirtualNode, free_port  # noqa: E402

CHANNELS = (("pressure", "bar"), ("flow", "m3/h"), ("temperature", "C"), ("current", "A"))

IMPORT_COST = """
import sys
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
import gatewayd.daemon, gatewayd.cli.main
before = rss()
try:
    __import__(sys.argv[1])
    print(rss() - before)
except ImportError:
    print("nan")
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) / 1024


def import_cost(module: str) -> float:
    out = subprocess.run([sys.executable, "-c", IMPORT_COST, module], capture_output=True, text=True, cwd=REPO)
    return float(out.stdout.strip() or "nan")  # nan: not installed


def prefill(state: Path, devices: int, interval: float, hours: float = 1.0) -> int:
    """An hour of history before now for every channel of every device; returns readings written."""
    store = Store.in_state_dir(state)
    now = int(time.time() * 1000)
    step = int(interval * 1000)
    count = int(hours * 3_600_000 / step)
    written = 0
    try:
        for d in range(devices):
            name = f"pump-{d + 1}"
            store.register_device(name, "edge-node", "prefill", {}, list(CHANNELS))
            for start in range(0, count, 4096):
                ts = range(now - (count - start) * step, now - max(0, count - start - 4096) * step, step)
                written += store.write_readings(
                    [Reading(name, c, t, 5.0 + (t // 1000) % 60 / 10) for t in ts for c, _ in CHANNELS]
                )
    finally:
        store.close()
    return written


def config_text(state: Path, ports: list[int], interval: float, dashboard_port: int | None) -> str:
    devices = "".join(
        f'\n[[devices]]\nname = "pump-{i + 1}"\nhost = "127.0.0.1"\nport = {p}\nunit = {i + 1}\n'
        f"interval_s = {interval}\n"
        for i, p in enumerate(ports)
    )
    dashboard = f"\n[dashboard]\nenabled = true\nport = {dashboard_port}\n" if dashboard_port else ""
    return f'[gateway]\nname = "bench"\nstate_dir = "{state}"\nlog_level = "warning"\n{dashboard}{devices}'


def get(port: int, path: str) -> tuple[float, int]:
    """Milliseconds for one request, and the body's size."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (path, response.status, body[:200])
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000, len(body)


def page_client(port: int, stop: threading.Event, timings: dict[str, list[float]], sizes: dict[str, int]) -> None:
    while not stop.is_set():
        try:
            get(port, "/api/overview")
            break
        except OSError:
            time.sleep(0.2)
    for path in (
        "/",
        "/static/dashboard.js",
        "/static/dashboard.css",
        "/static/vendor/uplot/uPlot.iife.min.js",
        "/static/vendor/uplot/uPlot.min.css",
    ):
        ms, size = get(port, path)
        timings.setdefault("page", []).append(ms)
        sizes["page"] = sizes.get("page", 0) + size
    while not stop.wait(2.0):
        now = int(time.time() * 1000)
        for name, path in (
            ("overview", "/api/overview"),
            ("alerts", "/api/alerts?limit=50"),
            ("series", f"/api/devices/pump-1/series?points=1000&from={now - 3_600_000}&to={now}"),
        ):
            ms, size = get(port, path)
            timings.setdefault(name, []).append(ms)
            sizes[name] = size


def run_daemon(config: Path, seconds: float, dashboard_port: int | None, page: bool) -> dict:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatewayd", "run", "--config", str(config)], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    timings: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    stop = threading.Event()
    client = threading.Thread(target=page_client, args=(dashboard_port, stop, timings, sizes)) if page else None
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    try:
        if client is not None:
            client.start()
        while (elapsed := time.monotonic() - started) < seconds:
            samples.append((elapsed, rss_mb(proc.pid)))
            time.sleep(1.0)
            print(f"[{elapsed:5.0f} s] RSS {samples[-1][1]:.1f} MB", file=sys.stderr, flush=True)
    finally:
        stop.set()
        if client is not None:
            client.join()
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    late = [mb for t, mb in samples if t >= seconds / 2]
    return {
        "rss_mb": round(statistics.median(late), 1),
        "rss_max_mb": round(max(late), 1),
        "timings": timings,
        "sizes": sizes,
        "stderr": err.strip().splitlines()[-3:],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.1, help="poll interval (s)")
    parser.add_argument("--seconds", type=float, default=60.0, help="per run")
    args = parser.parse_args()

    nodes = [VirtualNode(unit=i + 1, seed=i + 1) for i in range(args.nodes)]
    results = {}
    try:
        for node in nodes:
            node.start()
        ports = [n.port for n in nodes if n.port]
        with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
            for name, dashboard_port, page in (
                ("off", None, False),
                ("idle", free_port(), False),
                ("on", free_port(), True),
            ):
                config = Path(tmp) / f"{name}.toml"
                config.write_text(config_text(Path(tmp) / name, ports, args.interval, dashboard_port))
                prefill(Path(tmp) / name, args.nodes, args.interval)
                print(
                    f"dashboard {name}: {args.nodes} nodes every {args.interval:g} s for {args.seconds:g} s",
                    file=sys.stderr,
                )
                results[name] = run_daemon(config, args.seconds, dashboard_port, page)
    finally:
        for node in nodes:
            node.stop()

    off, idle, on = results["off"], results["idle"], results["on"]
    imports = {m: round(import_cost(m), 1) for m in ("gatewayd.dashboard.server", "aiohttp.web")}
    imports = {m: None if mb != mb else mb for m, mb in imports.items()}
    print(
        f"daemon RSS, {args.nodes} nodes every {args.interval:g} s (median of the second half of {args.seconds:g} s):"
    )
    print(f"  dashboard off (reference) {off['rss_mb']:6.1f} MB (max {off['rss_max_mb']:.1f})")
    print(
        f"  dashboard on, no page     {idle['rss_mb']:6.1f} MB (max {idle['rss_max_mb']:.1f})"
        f"  -> +{idle['rss_mb'] - off['rss_mb']:.1f} MB"
    )
    print(
        f"  dashboard on, page open   {on['rss_mb']:6.1f} MB (max {on['rss_max_mb']:.1f})"
        f"  -> +{on['rss_mb'] - off['rss_mb']:.1f} MB"
    )
    print("importing the web server on top of the daemon's modules:")
    for module, mb in imports.items():
        print(f"  {module:<26} +{mb} MB" if mb is not None else f"  {module:<26} not installed")
    print("API latency as an open page calls it (ms, median / p95 / max; bytes of the last answer):")
    latency = {}
    for name, values in on["timings"].items():
        latency[name] = {
            "median_ms": round(statistics.median(values), 1),
            "p95_ms": round(percentile(values, 0.95), 1),
            "max_ms": round(max(values), 1),
            "bytes": on["sizes"].get(name),
        }
        print(
            f"  {name:<9} {latency[name]['median_ms']:7.1f} {latency[name]['p95_ms']:7.1f} {latency[name]['max_ms']:7.1f}"
            f"  {on['sizes'].get(name)} B ({len(values)} calls)"
        )
    print(
        json.dumps(
            {
                "nodes": args.nodes,
                "interval_s": args.interval,
                "seconds": args.seconds,
                "rss_off_mb": off["rss_mb"],
                "rss_idle_mb": idle["rss_mb"],
                "rss_on_mb": on["rss_mb"],
                "rss_added_mb": round(on["rss_mb"] - off["rss_mb"], 1),
                "import_mb": imports,
                "latency": latency,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
