"""edge-flash fleet: every node in turn on virtual boards; a node that fails (no port, an
invalid entry) is reported and never stops the run."""

from edge_flash.cli import main
from edge_flash.virtual_board import VirtualBoard

from gatewayd.demo.virtual_node import free_port

from .test_inventory import SMALL

NODE = '\n[[nodes]]\nid = "{id}"\nunit = {unit}\nport = "{port}"\nmodbus = {{ tcp = {{ port = {tcp} }} }}\n'


def fleet_text(nodes: list[tuple[str, int, str]]) -> str:
    head = SMALL[: SMALL.index("[[nodes]]")]
    return head + "".join(NODE.format(id=i, unit=u, port=p, tcp=free_port()) for i, u, p in nodes)


def test_fleet_goes_on_past_failed_nodes(tmp_path, capsys):
    with VirtualBoard(tmp_path / "a") as a, VirtualBoard(tmp_path / "b") as b:
        inventory = tmp_path / "fleet.toml"
        text = fleet_text([("gone", 9, "/dev/ttyUSB-gone"), ("tank-1", 1, a.url), ("tank-2", 2, b.url)])
        text += '\n[[nodes]]\nid = "broken"\nunit = 4\nport = "socket://127.0.0.1:9"\nsample_period_ms = 1\n'
        inventory.write_text(text)
        code = main(["fleet", "--inventory", str(inventory)])
    out = capsys.readouterr().out
    assert code == 1
    assert "no port /dev/ttyUSB-gone: no such device" in out
    assert "node 1 running, 1 channels" in out and "node 2 running, 1 channels" in out
    assert "broken failed: " in out and "sample_period_ms: must be within 10..60000, got 1" in out
    assert "2 of 4 nodes deployed; failed: gone, broken" in out
    # the summary table lists every node with its result
    table = out[out.index("edge-flash fleet") :]
    for node, result in (("gone", "FAILED"), ("tank-1", "ok"), ("tank-2", "ok"), ("broken", "FAILED")):
        assert any(node in line and result in line for line in table.splitlines()), (node, table)
    assert (tmp_path / "a" / "main.py").exists() and (tmp_path / "b" / "main.py").exists()


def test_dry_run_checks_everything_and_touches_nothing(tmp_path, capsys):
    inventory = tmp_path / "fleet.toml"
    refused = f"socket://127.0.0.1:{free_port()}"  # nothing listens: a dry run must not connect
    inventory.write_text(fleet_text([("tank-1", 1, refused), ("tank-2", 2, "/dev/ttyUSB-none")]))
    assert main(["fleet", "--inventory", str(inventory), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tank-1" in out and "tank-2" in out and out.count("valid") == 2 and "virtual" in out
    assert "level" in out and "tcp" in out and "KB" in out
    assert "not connected now tank-2: no port /dev/ttyUSB-none" in out and "not connected now tank-1" not in out
    inventory.write_text(inventory.read_text() + '\n[[nodes]]\nid = "tank-3"\nunit = 3\nreset_code = 70000\n')
    assert main(["fleet", "--inventory", str(inventory), "--dry-run"]) == 2
    out = capsys.readouterr().out
    assert "invalid tank-3" in out and "reset_code: must be within 1..65535, got 70000" in out
    assert "not connected now tank-3: no port: the inventory gives neither port nor serial" not in out


def test_dry_run_names_the_secrets_a_real_run_needs_without_them_set(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TANK_WIFI_PASSWORD", raising=False)
    inventory = tmp_path / "fleet.toml"
    refused = f"socket://127.0.0.1:{free_port()}"  # nothing listens: neither run may connect
    text = fleet_text([("tank-1", 1, refused), ("tank-2", 2, "/dev/ttyUSB-none")])
    inventory.write_text(text + 'wifi = { ssid = "plant-ot", password_env = "TANK_WIFI_PASSWORD" }\n')
    assert main(["fleet", "--inventory", str(inventory), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert out.count("valid") == 2 and "invalid" not in out
    assert "secrets a real run reads from the environment: $TANK_WIFI_PASSWORD (for tank-2)" in out
    assert "not set now: $TANK_WIFI_PASSWORD (for tank-2) (a real run refuses until they are set)" in out
    # a real run refuses before touching any node
    assert main(["fleet", "--inventory", str(inventory)]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: $TANK_WIFI_PASSWORD (for tank-2) not set; set them and run again\n"
    assert "deployed" not in captured.out and "tank-1" not in captured.out
    monkeypatch.setenv("TANK_WIFI_PASSWORD", "s3cret")
    assert main(["fleet", "--inventory", str(inventory), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "$TANK_WIFI_PASSWORD (for tank-2)" in out and "all of them are set now" in out and "not set now" not in out
