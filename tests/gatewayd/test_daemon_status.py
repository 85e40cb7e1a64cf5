"""The daemon's status file: one schema, written by the daemon and read by `gatewayd status`
and the cloud agent."""

from __future__ import annotations

import json
import time

from gatewayd import daemon_status
from gatewayd.cli.main import main
from gatewayd.clock import boot_id
from gatewayd.daemon_status import ClockStatus, DaemonStatus, DeviceStatus, StoreStatus, WriterStatus
from gatewayd.store.database import Store


def sample(**changes) -> DaemonStatus:
    status = DaemonStatus(
        ts_ms=int(time.time() * 1000),
        monotonic_s=time.monotonic(),
        boot_id=boot_id(),
        pid=1234,
        devices={
            "pump-1": DeviceStatus(
                state="online", consecutive_failures=0, last_error=None, polls=10, readings=40, skipped_ticks=0
            ),
            "meter-2": DeviceStatus(
                state="offline", consecutive_failures=7, last_error="timed out", polls=3, readings=0, skipped_ticks=2
            ),
        },
        writer=WriterStatus(written=40, batches=4, queued=0, compacted_blocks=0),
        store=StoreStatus(
            state="ok",
            writing=True,
            since_ms=None,
            last_error=None,
            faults=0,
            recoveries=0,
            last_outage_s=None,
            readings_dropped=0,
            writes_waiting=0,
            writes_dropped=0,
            emergency_evictions=0,
            disk_bytes=123_000,
            budget_bytes=500_000_000,
        ),
        clock=ClockStatus(synchronized=True, trust="synchronized", steps=0, last_step_s=0.0),
        mqtt=None,
        alerts=2,
        detection=None,
    )
    return status.model_copy(update=changes)


def test_written_and_read_back_with_its_age(tmp_path):
    path = tmp_path / "status.json"
    daemon_status.write(path, sample())
    back = daemon_status.read(path)
    assert back == sample().model_copy(update={"ts_ms": back.ts_ms, "monotonic_s": back.monotonic_s})
    assert 0 <= back.age_s() < 5
    assert sample(boot_id="another boot").age_s() is None  # monotonic times of another boot say nothing


def test_a_missing_broken_or_foreign_file_reads_as_none_and_newer_keys_are_kept(tmp_path):
    path = tmp_path / "status.json"
    assert daemon_status.read(path) is None
    path.write_text("{not json")
    assert daemon_status.read(path) is None
    path.write_text(json.dumps({"devices": {}}))  # not a daemon's status
    assert daemon_status.read(path) is None
    path.write_text(json.dumps({**json.loads(sample().model_dump_json()), "from_a_newer_daemon": 1}))
    assert daemon_status.read(path).devices["pump-1"].polls == 10


def test_gatewayd_status_prints_the_running_daemons_devices(tmp_path, capsys):
    state = tmp_path / "state"
    Store(state / "gatewayd.sqlite3").close()
    daemon_status.write(state / "status.json", sample())
    config = tmp_path / "gatewayd.toml"
    config.write_text(f'[gateway]\nstate_dir = "{state}"\n\n[[devices]]\nname = "pump-1"\nhost = "h"\n')
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "daemon: 40 readings written, 0 queued, 2 alerts raised" in out
    assert "  meter-2: offline, 3 polls, 2 skipped, last error: timed out" in out
