import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.alerts.alert import Alert
from gatewayd.cli.main import main
from gatewayd.clock import iso, parse_time
from gatewayd.store import upload_state
from gatewayd.store.database import Reading, Store
from gatewayd.store.export import select_channels


@pytest.fixture
def site(tmp_path):
    state = tmp_path / "state"
    store = Store(state / "gatewayd.sqlite3")
    store.register_device("pump-1", "edge-node", "tcp://x", {}, [("flow", "m3/h"), ("temp", "C")])
    t0 = parse_time("2026-11-24T08:00:00")
    store.write_readings(
        [Reading("pump-1", "flow", t0 + 500 * i, 20.0 + i) for i in range(10)]
        + [Reading("pump-1", "temp", t0 + 500 * i, 30.5) for i in range(10)]
    )
    store.close()
    config = tmp_path / "gatewayd.toml"
    config.write_text(f'[gateway]\nstate_dir = "{state}"\n\n[[devices]]\nname = "pump-1"\nhost = "h"\n')
    return config, t0


def test_times():
    assert parse_time("2026-11-24T08:00:00") == parse_time("2026-11-24T08:00:00+00:00") == 1795507200000
    assert parse_time("1795507200000") == 1795507200000
    assert iso(1795507200123) == "2026-11-24T08:00:00.123Z"
    with pytest.raises(ValueError, match="neither an ISO 8601 time"):
        parse_time("yesterday")


def test_export_range_and_channel(site, tmp_path, capsys):
    config, t0 = site
    out = tmp_path / "flow.csv"
    code = main(
        [
            "export",
            "--config",
            str(config),
            "--channel",
            "pump-1/flow",
            "--from",
            "2026-11-24T08:00:01",
            "--to",
            str(t0 + 3000),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["timestamp"] for r in rows] == [iso(t0 + 500 * i) for i in range(2, 6)]
    assert [float(r["value"]) for r in rows] == [22.0, 23.0, 24.0, 25.0]
    assert {r["unit"] for r in rows} == {"m3/h"}
    assert "4 readings exported" in capsys.readouterr().err


def test_export_unknown_channel_and_missing_store(site, tmp_path, capsys):
    config, _ = site
    assert main(["export", "--config", str(config), "--channel", "pump-1/nope"]) == 2
    assert "unknown channel(s) pump-1/nope; known: pump-1/flow, pump-1/temp" in capsys.readouterr().err
    empty = tmp_path / "empty.toml"
    empty.write_text(f'[gateway]\nstate_dir = "{tmp_path / "none"}"\n\n[[devices]]\nname = "a"\nhost = "h"\n')
    assert main(["status", "--config", str(empty)]) == 1
    assert "no store at" in capsys.readouterr().err


def test_status(site, capsys):
    config, _ = site
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "20 readings" in out and "pump-1: 20 readings" in out
    assert "flow           last 29 m3/h" in out and "mean 24.5" in out


def test_status_counts_what_waits_for_upload_from_the_agents_cursors(site, capsys):
    config, _ = site
    state = config.parent / "state"
    store = Store(state / "gatewayd.sqlite3")
    for i in range(3):
        store.record_alert(Alert(f"a{i}", "pump-1", ["flow"], "warning", "model", i, {}))
    store.label_alert("a0", "true")
    store.close()
    assert main(["status", "--config", str(config)]) == 0
    assert (
        "outbox: 4 waiting for upload (alerts 3, labels 1; no cloud agent has uploaded from this gateway)"
        in capsys.readouterr().out
    )
    (state / upload_state.FILE_NAME).write_text(json.dumps({"cursors": {"alerts": 2, "labels": 4}}))
    assert main(["status", "--config", str(config)]) == 0
    assert "outbox: 1 waiting for upload (alerts 1, labels 0)" in capsys.readouterr().out


def test_export_marks_readings_stamped_before_the_clock_was_synchronised(tmp_path, capsys):
    state = tmp_path / "state"
    store = Store(state / "gatewayd.sqlite3")
    store.register_device("pump-1", "edge-node", "tcp://x", {}, [("flow", "m3/h")])
    t0 = parse_time("2026-09-01T08:00:00")  # a Pi booted with an old time ...
    store.write_readings([Reading("pump-1", "flow", t0 + 500 * i, 1.0) for i in range(4)], clock_synced=False)
    t1 = parse_time("2026-11-24T08:00:00")  # ... and NTP set it
    store.write_readings([Reading("pump-1", "flow", t1 + 500 * i, 2.0) for i in range(3)])
    store.close()
    config = tmp_path / "gatewayd.toml"
    config.write_text(f'[gateway]\nstate_dir = "{state}"\n\n[[devices]]\nname = "pump-1"\nhost = "h"\n')
    out = tmp_path / "flow.csv"
    assert main(["export", "--config", str(config), "--out", str(out), "--mark-clock"]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["clock"] for r in rows] == ["unsynced"] * 4 + [""] * 3
    assert "4 of them were stamped before the gateway's clock was synchronised" in capsys.readouterr().err
    assert main(["export", "--config", str(config), "--out", str(out)]) == 0
    assert "clock" not in out.read_text().splitlines()[0]
    assert "(--mark-clock marks them)" in capsys.readouterr().err


def test_an_export_that_matches_nothing_says_what_the_store_holds(site, capsys):
    config, t0 = site
    store = Store(config.parent / "state" / "gatewayd.sqlite3")
    store.register_device("pump-2", "edge-node", "tcp://y", {}, [("flow", "m3/h")])
    store.close()
    args = ["export", "--config", str(config), "--from", "2026-11-25T08:00"]
    assert main([*args, "--channel", "pump-1/flow", "--channel", "pump-2/flow"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["timestamp,device,channel,unit,value"]
    first, last = iso(t0), iso(t0 + 4500)
    assert captured.err.splitlines() == [
        "0 readings exported",
        f"nothing in that range: pump-1/flow holds readings from {first} to {last}; pump-2/flow holds no readings",
    ]
    # the times shown are ones --from and --to take: the export from them finds the readings
    assert main(["export", "--config", str(config), "--channel", "pump-1/flow", "--from", first, "--to", last]) == 0
    assert "9 readings exported" in capsys.readouterr().err


def test_export_as_json_lines_has_the_csvs_fields(site, tmp_path, capsys):
    config, t0 = site
    args = ["export", "--config", str(config), "--channel", "pump-1/flow", "--to", str(t0 + 1500), "--mark-clock"]
    assert main([*args, "--out", str(tmp_path / "flow.csv")]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "flow.csv").read_text())))
    assert main([*args, "--format", "jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    objects = [json.loads(line) for line in lines]
    assert len(objects) == 3 and [o["value"] for o in objects] == [20.0, 21.0, 22.0]
    assert [{k: str(v) for k, v in o.items()} for o in objects] == rows  # same fields, same values
    assert list(objects[0]) == ["timestamp", "device", "channel", "unit", "value", "clock"]
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "jsonl: one JSON object per line" in " ".join(capsys.readouterr().out.split())


def big_site(tmp_path) -> Path:
    """A store whose export, status and alert list each fill more than a pipe's buffer (64 KiB)."""
    state = tmp_path / "state"
    store = Store(state / "gatewayd.sqlite3")
    store.register_device("pump-1", "edge-node", "tcp://x", {}, [(f"ch{i}", "bar") for i in range(2000)])
    t0 = parse_time("2026-11-24T08:00:00")
    store.write_readings([Reading("pump-1", "ch0", t0 + 100 * i, float(i)) for i in range(20_000)])
    for i in range(1500):
        store.record_alert(Alert(f"gw:pump-1:model:{i}", "pump-1", ["ch0"], "warning", "model", t0 + i, {}))
    store.close()
    config = tmp_path / "gatewayd.toml"
    config.write_text(f'[gateway]\nstate_dir = "{state}"\n\n[[devices]]\nname = "pump-1"\nhost = "h"\n')
    return config


@pytest.mark.parametrize("command", [["export"], ["status"], ["alert", "list", "--limit", "1500"]])
def test_a_reader_that_closes_the_pipe_early_ends_the_command_quietly(tmp_path, command):
    """`gatewayd export | head`: no BrokenPipeError traceback, the exit status of a tool ended by SIGPIPE."""
    config = big_site(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatewayd", *command, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline()  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]  # as head does after its lines; the command is still writing
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err


def test_an_unknown_channel_names_the_known_ones_briefly(tmp_path):
    store = Store(tmp_path / "gatewayd.sqlite3")
    store.register_device("pump-1", "edge-node", "tcp://x", {}, [(f"ch{i:02}", "bar") for i in range(14)])
    try:
        with pytest.raises(KeyError) as error:
            select_channels(store, ["pump-1/nope"])
    finally:
        store.close()
    known = ", ".join(f"pump-1/ch{i:02}" for i in range(10))
    assert error.value.args[0] == f"unknown channel(s) pump-1/nope; known: {known} and 4 more"
