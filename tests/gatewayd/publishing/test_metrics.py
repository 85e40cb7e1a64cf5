"""Prometheus metrics from a running daemon polling a virtual node, scraped over HTTP and
checked by promtool (Debian's prometheus): the exposition is valid and says what the daemon
does (the device up and polled, readings stored, the model collecting)."""

import asyncio
import shutil
import subprocess
import urllib.request

from gatewayd import daemon
from gatewayd.config import parse_config
from gatewayd.demo.virtual_node import free_port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


def value(text: str, sample: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(sample + " "))
    return float(line.rsplit(" ", 1)[1])


async def test_a_running_daemon_serves_metrics_promtool_accepts(tmp_path, virtual_node):
    port = free_port()
    config = parse_config(
        f'[gateway]\nname = "g"\nstate_dir = "{tmp_path}"\n[store]\nflush_interval_s = 0.2\n'
        f"[metrics]\nenabled = true\nport = {port}\n"
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {virtual_node.port}\ninterval_s = 0.1\n'
    )
    stop = asyncio.Event()
    ready = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(config, stop, ready))
    try:
        await ready
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                text = await asyncio.to_thread(scrape, port)
                if value(text, "gatewayd_readings_stored_total") > 0:
                    break
            except (OSError, StopIteration):
                pass
            assert asyncio.get_running_loop().time() < deadline, "no readings stored in the metrics"
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
    checked = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert value(text, 'gatewayd_device_up{device="pump-1"}') == 1.0
    assert value(text, 'gatewayd_device_state{device="pump-1",state="online"}') == 1.0
    assert value(text, 'gatewayd_device_polls_total{device="pump-1"}') > 0
    assert value(text, 'gatewayd_model_version{scope="pump-1"}') == 0.0  # collecting its first windows
    assert value(text, "gatewayd_store_writing") == 1.0
