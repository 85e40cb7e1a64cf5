"""The store's worker on real file systems that fail: a full tmpfs, an ext4 image the kernel
turns read-only, a database another process keeps locked. Each fault degrades the store
without raising past it, writes that must not be lost wait in memory, and the store recovers
by itself when the cause is gone."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gatewayd.alerts.alert import Alert, AlertChange
from gatewayd.store import upload_state
from gatewayd.store.async_store import AsyncStore
from gatewayd.store.database import Reading, Store
from gatewayd.store.faults import StoreFault
from gatewayd.store.worker import StoreWorker

from .support import ext4_image, fill, loop_device, tmpfs

CHANNELS = [("a", "V"), ("b", "V")]


def batch(t0: int, n: int, rng: np.random.Generator) -> list[Reading]:
    values = rng.normal(0, 1, (n, 2)).tolist()  # noise: a few bytes a reading, whatever the codec
    return [
        Reading("n", ch, t0 + 100 * i, row[c]) for i, row in enumerate(values) for c, (ch, _) in enumerate(CHANNELS)
    ]


async def test_a_full_disk_is_survived_by_an_emergency_eviction(tmp_path):
    rng = np.random.default_rng(1)
    with tmpfs(tmp_path / "fs", "6m") as fs:
        worker = StoreWorker(fs / "state", 10**9)  # a budget far above the disk
        assert await worker.open()
        await worker.register("n", "edge-node", "x", {}, CHANNELS)
        await worker.enforce_budget()  # puts the reserve in place
        assert worker.reserve.on_disk() == worker.reserve.size > 0
        t = 0
        with pytest.raises(StoreFault) as fault:
            for _ in range(10_000):  # writing past the budget's guard: the file system fills
                await worker.write_readings(batch(t, 2000, rng))
                t += 200_000
        assert fault.value.kind == "disk_full" and worker.degraded
        assert "the disk is full" in worker.health.last_error
        # an alert raised now is not lost: it waits in memory
        await AsyncStore(worker).record_alert(Alert("site:n:a:1", "n", ["a"], "critical", "edge", t, {"value": 9.0}))
        await AsyncStore(worker).update_alert(
            AlertChange("site:n:a:1", "n", "edge", severity="critical", detail={"value": 10.0})
        )
        assert len(worker.kept) == 2
        with pytest.raises(StoreFault):
            await AsyncStore(worker).dead_letter("x", "y", b"")  # other writes fail at once
        assert await worker.recover()
        assert not worker.degraded and worker.health.emergency_evictions == 1 and not worker.kept
        assert worker.reserve.on_disk() == 0  # given back to make room
        alerts = await worker.run(lambda s: s.alerts())
        assert [(a["id"], a["detail"]) for a in alerts] == [("site:n:a:1", {"value": 10.0})]
        first = await worker.run(lambda s: s.readings("n", "a", 0, 100_000))
        assert len(first) == 0, "the oldest readings made the room"
        # writing goes on in the pages the eviction freed
        await worker.write_readings(batch(t, 100, rng))
        newest = await worker.run(lambda s: s.readings("n", "a", t, t + 10_000))
        assert len(newest) == 100
        await worker.close()


async def test_an_ext4_error_remount_read_only_degrades_then_a_fresh_mount_recovers(tmp_path):
    rng = np.random.default_rng(2)
    with ext4_image(tmp_path, 32) as (disk, image):
        worker = StoreWorker(disk / "state", 10**9)
        assert await worker.open()
        await worker.register("n", "edge-node", "x", {}, CHANNELS)
        await worker.write_readings(batch(0, 100, rng))
        await worker.run(Store.checkpoint)  # on the card for sure (a WAL not yet synced is lost with the mount)
        # what ext4 does on a detected error with errors=remount-ro (a failing SD card)
        Path(f"/sys/fs/ext4/{loop_device(disk)}/trigger_fs_error").write_text("fault test\n")
        with pytest.raises(StoreFault) as fault:
            await worker.write_readings(batch(10_000, 100, rng))
        assert fault.value.kind == "read_only", worker.health.last_error
        await AsyncStore(worker).record_alert(Alert("site:n:a:2", "n", ["a"], "critical", "edge", 10_000, {}))
        assert not await worker.recover()  # still read-only: reopening cannot help yet
        assert worker.degraded and len(worker.kept) == 1
        # a person checks the card and mounts it again (or the gateway reboots)
        subprocess.run(["umount", "-l", str(disk)], check=True)
        subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True)
        subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(disk)], check=True)
        assert await worker.recover(), worker.health.last_error
        await worker.write_readings(batch(20_000, 100, rng))
        assert await worker.run(lambda s: s.alerts_by_id(["site:n:a:2"])) == ["site:n:a:2"]
        assert len(await worker.run(lambda s: s.readings("n", "a"))) == 200
        await worker.close()


async def test_a_database_locked_by_another_process_is_waited_out(tmp_path):
    rng = np.random.default_rng(3)
    worker = StoreWorker(tmp_path / "state", 10**9)
    assert await worker.open()
    await worker.register("n", "edge-node", "x", {}, CHANNELS)
    holder = sqlite3.connect(tmp_path / "state" / "gatewayd.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # e.g. an operator's sqlite3 shell in the middle of a change
    try:
        with pytest.raises(StoreFault) as fault:
            await worker.write_readings(batch(0, 10, rng))  # after the 5 s busy timeout
        assert fault.value.kind == "locked"
        await AsyncStore(worker).record_alert(Alert("site:n:a:3", "n", ["a"], "warning", "edge", 0, {}))
        assert not await worker.recover()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await worker.recover()
    await worker.write_readings(batch(0, 10, rng))
    assert await worker.run(lambda s: s.alerts_by_id(["site:n:a:3"])) == ["site:n:a:3"]
    await worker.close()


async def test_a_state_dir_that_cannot_be_created_is_retried_until_it_can(tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the state directory's parent should be")
    worker = StoreWorker(blocked / "state", 10**9)
    assert not await worker.open()
    assert worker.health.state == "unavailable" and str(blocked) in worker.health.last_error
    await worker.register("n", "edge-node", "x", {}, CHANNELS)  # remembered, not lost
    await AsyncStore(worker).record_alert(Alert("site:n:a:4", "n", ["a"], "critical", "edge", 0, {}))
    assert not await worker.recover()
    blocked.unlink()
    assert await worker.recover()
    await worker.write_readings(batch(0, 10, np.random.default_rng(4)))
    assert await worker.run(lambda s: s.alerts_by_id(["site:n:a:4"])) == ["site:n:a:4"]
    await worker.close()


def test_fill_takes_every_byte(tmp_path):
    with tmpfs(tmp_path / "fs", "1m") as fs:
        fill(fs)
        with pytest.raises(OSError):
            (fs / "more").write_bytes(b"x" * 4096)


async def test_a_damaged_database_keeps_the_alerts_in_memory_until_a_person_restores_it(tmp_path):
    state = tmp_path / "state"
    worker = StoreWorker(state, 10**9)
    assert await worker.open()
    await worker.register("n", "edge-node", "x", {}, CHANNELS)
    await worker.write_readings(batch(0, 100, np.random.default_rng(5)))
    await worker.close()
    db = state / "gatewayd.sqlite3"
    good = db.read_bytes()
    db.write_bytes(b"\0" * 100 + good[100:])  # the header gone, as after a card's bad block
    worker = StoreWorker(state, 10**9)
    assert not await worker.open()
    assert worker.health.state == "corrupt" and "damaged" in worker.health.last_error
    await AsyncStore(worker).record_alert(Alert("site:n:a:5", "n", ["a"], "critical", "edge", 0, {}))
    assert not await worker.recover() and len(worker.kept) == 1
    assert worker.next_attempt - worker.monotonic() > 30, "a damaged file is retried slowly"
    db.write_bytes(good)  # restored from a backup, or recovered with sqlite3's .recover
    assert await worker.recover()
    assert await worker.run(lambda s: s.alerts_by_id(["site:n:a:5"])) == ["site:n:a:5"]
    assert len(await worker.run(lambda s: s.readings("n", "a"))) == 100
    await worker.close()


async def test_an_alert_is_on_the_card_when_its_write_returns(tmp_path):
    """The kernel throws the page cache away (ext4's emergency read-only, as a power cut would):
    an alert written just before, with no checkpoint since, is there after the card is mounted
    again, because alert writes sync the WAL at commit."""
    with ext4_image(tmp_path, 32) as (disk, image):
        worker = StoreWorker(disk / "state", 10**9)
        assert await worker.open()
        await worker.register("n", "edge-node", "x", {}, CHANNELS)
        await worker.run(Store.checkpoint)
        await AsyncStore(worker).record_alert(Alert("site:n:a:6", "n", ["a"], "critical", "edge", 1000, {"value": 9.0}))
        await AsyncStore(worker).update_alert(AlertChange("site:n:a:6", "n", "edge", closed_ms=2000))
        Path(f"/sys/fs/ext4/{loop_device(disk)}/trigger_fs_error").write_text("power cut\n")
        await worker.close()
        subprocess.run(["umount", "-l", str(disk)], check=True)
        subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True)
        subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(disk)], check=True)
        worker = StoreWorker(disk / "state", 10**9)
        assert await worker.open()
        alerts = await worker.run(lambda s: s.alerts())
        assert [(a["id"], a["closed_ms"]) for a in alerts] == [("site:n:a:6", 2000)]
        assert await worker.run(lambda s: s.conn.execute("PRAGMA synchronous").fetchone()[0]) == 1  # NORMAL again
        await worker.close()


async def test_the_budget_frees_outbox_rows_the_cloud_agent_has_uploaded(tmp_path):
    """The worker reads the agent's cursors from its state file beside the store: with a budget
    the store is over, uploaded outbox rows go and those still waiting stay."""
    state = tmp_path / "state"
    worker = StoreWorker(state, 10**9)
    assert await worker.open()
    await worker.register("n", "edge-node", "x", {}, CHANNELS)
    for i in range(40):
        await AsyncStore(worker).record_alert(
            Alert(f"site:n:model:{i}", "n", ["a"], "warning", "model", i, {"pad": "x" * 4000})
        )
    (state / upload_state.FILE_NAME).write_text(json.dumps({"cursors": {"alerts": 30}}))
    worker.budget = 64 * 1024  # far below what the outbox holds now
    evicted = await worker.enforce_budget()
    assert evicted.get("outbox_uploaded") == 30
    reader = Store(state / "gatewayd.sqlite3", readonly=True)
    assert [i for i, _, _ in reader.outbox_after(upload_state.OUTBOX_SOURCES["alerts"], 0, 100)] == list(range(31, 41))
    assert reader.alert_count() == 40
    reader.close()
    await worker.close()
