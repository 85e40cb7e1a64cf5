"""The faults a gateway meets, each against a live `gatewayd run` polling a virtual node and
publishing to a Mosquitto broker of its own: a disk that fills up, an SD card the kernel turns
read-only, write errors (EIO), a database another process keeps locked, wall-clock steps, a
hostile retained MQTT command, kill -9 under load, a broker that goes away. For each: whether
the daemon survived (the same process, or restarted as systemd would after kill -9), committed
readings lost (and, for a remount the kernel forces, those of the last checkpoint interval that
only the page cache held: what a power cut takes with synchronous = NORMAL, docs/store.md),
readings not stored while the store was down (shed, counted), alerts raised by
the node during the fault and how many never reached the store, and seconds from the end of
the fault to a store writing again. Needs root (mounts) and the packages `make test` installs.

    .venv/bin/python bench/faults.py [--only disk_full,read_only,...]

The reference is the goal, in the same table: every fault survived, 0 alerts and 0 committed
readings lost. Last line: a JSON object of the figures."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatewayd.store.database import Store  # noqa: E402
from gatewayd.demo.virtual_node import VirtualNode  # noqa: E402
from tests.conftest import Mosquitto  # noqa: E402
from tests.faults.support import Daemon, ext4_image, fill, loop_device, stored, tmpfs, tool, wait_for  # noqa: E402
from tests.faults.test_clock_steps import SteppedClock  # noqa: E402
from tests.faults.test_daemon_disk import SETTINGS  # noqa: E402
from tests.integration.test_mqtt import Subscriber  # noqa: E402


@dataclass
class Outcome:
    fault: str
    survived: bool = False
    readings_lost: int = 0  # committed and checkpointed before the fault, gone after it (evictions excepted)
    unsynced_lost: int = 0  # committed in the last checkpoint interval, lost with the page cache (a power cut's share)
    readings_shed: int = 0  # taken while the store could not write, not stored
    alerts_raised: int = 0
    alerts_lost: int = 0
    recover_s: float | None = None
    note: str = ""


class Site:
    """A node with an I/O rig, a broker, the daemon and an MQTT subscriber, in one folder."""

    def __init__(self, folder: Path, state: Path, *, env: dict | None = None, prefix: tuple[str, ...] = ()):
        self.folder = folder
        self.broker = Mosquitto(folder)
        self.broker.start()
        self.node = VirtualNode(unit=1, seed=41, period_ms=20, rig=True)
        self.node.start()
        self.db = state / "gatewayd.sqlite3"
        self.daemon = Daemon(
            folder, state, [self.node], extra=SETTINGS.format(port=self.broker.port), env=env, prefix=prefix
        ).start()
        self.sub = Subscriber(self.broker.port, "gateway/site/#")
        self.pid = self.daemon.pid
        wait_for("readings stored", lambda: self.daemon.written() > 300, 60)

    def count(self, before_ms: int | None = None) -> int:
        """Readings in the store (stamped before `before_ms`), as a reader sees them: exact per
        reading, whatever compaction has merged since."""
        try:
            store = Store(self.db, readonly=True)
        except sqlite3.Error:
            return 0
        try:
            return sum(len(store.channel_readings(cid, 0, before_ms or 2**62)) for cid, *_ in store.channels())
        except sqlite3.Error:
            return 0
        finally:
            store.close()

    def evicted(self) -> int:
        found = stored(self.db, "SELECT coalesce(sum(readings), 0) FROM evictions WHERE kind = 'raw'")
        return found[0][0] if found else 0

    def raise_alert(self) -> None:
        self.node.drive(3, "offset", 20)  # the motor current past its bound: a critical edge alert

    def clear_alert(self) -> None:
        self.node.drive(3, "clear")

    def alerts_published(self) -> set[str]:
        with self.sub.lock:
            return {m[1]["id"] for m in self.sub.messages if m[0] == "gateway/site/alerts" and not m[1].get("update")}

    def alerts_stored(self) -> set[str]:
        return {row[0] for row in stored(self.db, "SELECT id FROM alerts")}

    def store_state(self) -> str | None:
        status = self.daemon.status()
        return status["store"]["state"] if status else None

    def shed(self) -> int:
        status = self.daemon.status()
        return status["store"]["readings_dropped"] if status else 0

    def close(self) -> int:
        self.sub.close()
        code = self.daemon.stop()
        self.node.stop()
        self.broker.stop()
        return code


@contextmanager
def site(folder: Path, state: Path, **kw) -> Iterator[Site]:
    s = Site(folder, state, **kw)
    try:
        yield s
    finally:
        s.close()


def settle(s: Site, out: Outcome, fault_end: float, before_ms: int, committed: int, evicted: int) -> None:
    """After the cause is gone: time to a writing store, then the accounting."""
    wait_for("the store writing again", lambda: s.store_state() == "ok", 120)
    written = s.daemon.written()
    wait_for("readings stored again", lambda: s.daemon.written() > written + 100, 60)
    out.recover_s = round(time.monotonic() - fault_end, 1)
    raised = s.alerts_published()
    wait_for("the alerts raised meanwhile in the store", lambda: raised <= s.alerts_stored(), 60)
    out.alerts_raised = len(raised)
    out.alerts_lost = len(raised - s.alerts_stored())
    out.readings_lost = max(0, committed - s.count(before_ms) - (s.evicted() - evicted))
    out.readings_shed = s.shed()
    out.survived = s.daemon.alive() and s.daemon.pid == s.pid


def checkpoint_now(s: Site) -> tuple[int, int, int]:
    """What is committed at this moment (a reader sees it), and the eviction count."""
    now_ms = int(time.time() * 1000)
    return now_ms, s.count(now_ms), s.evicted()


def disk_full(folder: Path) -> Outcome:
    out = Outcome("disk_full", note="tmpfs filled by a runaway writer, then freed")
    with tmpfs(folder / "fs", "24m") as fs, site(folder, fs / "state") as s:
        before_ms, committed, evicted = checkpoint_now(s)
        stop = threading.Event()

        def runaway() -> None:
            while not stop.is_set():
                fill(fs, "runaway.log")
                stop.wait(0.01)

        writer = threading.Thread(target=runaway)
        writer.start()
        try:
            wait_for("the full disk reported", lambda: s.store_state() == "disk_full", 60)
            s.raise_alert()
            wait_for("the alert published", s.alerts_published, 30)
            time.sleep(3)  # a while full
        finally:
            stop.set()
            writer.join()
            (fs / "runaway.log").unlink()
        settle(s, out, time.monotonic(), before_ms, committed, evicted)
        s.clear_alert()
    return out


def read_only(folder: Path) -> Outcome:
    out = Outcome("read_only", note="ext4 errors=remount-ro triggered, then checked and mounted again")
    with ext4_image(folder, 64) as (disk, image), site(folder, disk / "state") as s:
        fault_ms, everything, evicted = checkpoint_now(s)
        # What the last checkpoint has synced (synchronous = NORMAL: the WAL is synced at
        # checkpoints, every second here): readings older than an interval and a flush.
        before_ms = fault_ms - 2000
        committed = s.count(before_ms)
        Path(f"/sys/fs/ext4/{loop_device(disk)}/trigger_fs_error").write_text("fault bench\n")
        wait_for("read-only reported", lambda: s.store_state() == "read_only", 60)
        s.raise_alert()
        wait_for("the alert published", s.alerts_published, 30)
        time.sleep(3)
        subprocess.run(["umount", "-l", str(disk)], check=True)
        subprocess.run([tool("e2fsck"), "-fy", str(image)], capture_output=True)
        subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(disk)], check=True)
        settle(s, out, time.monotonic(), before_ms, committed, evicted)
        out.unsynced_lost = max(0, everything - committed - (s.count(fault_ms) - s.count(before_ms)))
        s.clear_alert()
    return out


def io_error(folder: Path) -> Outcome:
    out = Outcome("io_error", note="EIO on every write and sync of the process (libfiu), then none")
    fiu_run, fiu_ctrl = tool("fiu-run"), tool("fiu-ctrl")
    points = ("posix/io/rw/pwrite", "posix/io/sync/fdatasync", "posix/io/sync/fsync")
    with site(folder, folder / "state", prefix=(fiu_run, "-x", "-f", str(folder / "fiu"))) as s:
        before_ms, committed, evicted = checkpoint_now(s)
        for point in points:
            subprocess.run(
                [fiu_ctrl, "-f", str(folder / "fiu"), "-c", f"enable name={point},failinfo=5", str(s.pid)], check=True
            )
        wait_for("the I/O error reported", lambda: s.store_state() == "io_error", 60)
        s.raise_alert()
        wait_for("the alert published", s.alerts_published, 30)
        time.sleep(3)
        for point in points:
            subprocess.run([fiu_ctrl, "-f", str(folder / "fiu"), "-c", f"disable name={point}", str(s.pid)], check=True)
        settle(s, out, time.monotonic(), before_ms, committed, evicted)
        s.clear_alert()
    return out


def locked(folder: Path) -> Outcome:
    out = Outcome("locked", note="another process holds a write transaction for 15 s")
    with site(folder, folder / "state") as s:
        before_ms, committed, evicted = checkpoint_now(s)
        holder = sqlite3.connect(s.db, isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")
        try:
            wait_for("the lock reported", lambda: s.store_state() == "locked", 60)
            s.raise_alert()
            wait_for("the alert published", s.alerts_published, 30)
            time.sleep(8)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        settle(s, out, time.monotonic(), before_ms, committed, evicted)
        s.clear_alert()
    return out


def clock_steps(folder: Path) -> Outcome:
    out = Outcome("clock_steps", note="+365 d, back, -60 d, back (libfaketime); readings counted whatever their time")
    clock = SteppedClock(folder)
    with site(folder, folder / "state", env=clock.env) as s:
        committed = s.count()
        evicted = s.evicted()
        for offset in ("+365d", "+0", "-60d", "+0"):
            clock.set(offset)
            written = s.daemon.written()
            wait_for(f"writing at {offset}", lambda: s.daemon.written() > written + 300, 60)
        s.raise_alert()
        wait_for("the alert published", s.alerts_published, 30)
        end = time.monotonic()
        settle(s, out, end, 0, 0, evicted)
        out.readings_lost = max(0, committed - (s.count() - (s.evicted() - evicted)))
        out.recover_s = 0.0  # never stopped writing
    return out


def hostile_command(folder: Path) -> Outcome:
    out = Outcome("hostile_command", note="a retained `[` x 1000 on the command topic, then a restart onto it")
    with site(folder, folder / "state") as s:
        before_ms, committed, evicted = checkpoint_now(s)
        import paho.mqtt.client as paho

        client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", s.broker.port)
        client.loop_start()
        client.publish("gateway/site/command", b"[" * 1000, qos=1, retain=True).wait_for_publish(10)
        s.daemon.stop()  # a clean restart, as after a reload or a reboot: the retained message comes first
        s.daemon.start()
        s.pid = s.daemon.pid
        end = time.monotonic()
        s.raise_alert()
        wait_for("the alert published", s.alerts_published, 30)
        settle(s, out, end, before_ms, committed, evicted)
        client.publish("gateway/site/command", b"", qos=1, retain=True).wait_for_publish(10)
        client.loop_stop()
        client.disconnect()
    return out


def kill_9(folder: Path, rounds: int = 10) -> Outcome:
    out = Outcome("kill_9", note=f"{rounds} kill -9 under load, restarted at once as systemd does")
    with site(folder, folder / "state") as s:
        lost = 0
        for _ in range(rounds):
            written = s.daemon.written()
            wait_for("writing", lambda: s.daemon.written() > written + 50, 60)
            seen = s.count()
            os.kill(s.daemon.pid, signal.SIGKILL)
            s.daemon.process.wait()  # type: ignore[union-attr]
            lost += max(0, seen - s.count())
            s.daemon.start()
        s.pid = s.daemon.pid
        end = time.monotonic()
        s.raise_alert()
        wait_for("the alert published", s.alerts_published, 30)
        settle(s, out, end, 0, 0, s.evicted())
        out.readings_lost = lost
    return out


def broker_away(folder: Path) -> Outcome:
    out = Outcome("broker_away", note="the broker stopped for 10 s; an alert raised meanwhile")
    with site(folder, folder / "state") as s:
        before_ms, committed, evicted = checkpoint_now(s)
        s.sub.close()
        s.broker.stop()
        s.raise_alert()
        wait_for("the alert in the store", lambda: stored(s.db, "SELECT id FROM alerts"), 30)
        time.sleep(10)
        s.broker.start()
        s.sub = Subscriber(s.broker.port, "gateway/site/#")
        end = time.monotonic()
        wait_for("the alert published after the outage", s.alerts_published, 120)
        settle(s, out, end, before_ms, committed, evicted)
    return out


SCENARIOS: dict[str, Callable[[Path], Outcome]] = {
    "disk_full": disk_full,
    "read_only": read_only,
    "io_error": io_error,
    "locked": locked,
    "clock_steps": clock_steps,
    "hostile_command": hostile_command,
    "kill_9": kill_9,
    "broker_away": broker_away,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS))
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [n for n in chosen if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if os.geteuid() != 0:
        parser.error("needs root: the faults mount file systems")
    outcomes = []
    for name in chosen:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix=f"fault-{name}-") as tmp:
            t0 = time.monotonic()
            try:
                outcome = SCENARIOS[name](Path(tmp))
            except AssertionError as exc:
                outcome = Outcome(name, note=f"FAILED: {exc}")
            print(f"  {name}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        outcomes.append(outcome)
    print(
        f"{'fault':<16} {'survived':>8} {'readings lost':>13} {'unsynced':>8} {'shed':>6} {'alerts':>6} "
        f"{'alerts lost':>11} {'recover s':>9}  what"
    )
    for o in outcomes:
        print(
            f"{o.fault:<16} {'yes' if o.survived else 'NO':>8} {o.readings_lost:>13} {o.unsynced_lost:>8} "
            f"{o.readings_shed:>6} {o.alerts_raised:>6} {o.alerts_lost:>11} "
            f"{o.recover_s if o.recover_s is not None else '-':>9}  {o.note}"
        )
    print(f"{'goal':<16} {'yes':>8} {0:>13} {'':>8} {'':>6} {'':>6} {0:>11}")
    figures = {
        "faults": [asdict(o) for o in outcomes],
        "all_survived": all(o.survived for o in outcomes),
        "readings_lost": sum(o.readings_lost for o in outcomes),
        "alerts_lost": sum(o.alerts_lost for o in outcomes),
        "goal": {"all_survived": True, "readings_lost": 0, "alerts_lost": 0},
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
