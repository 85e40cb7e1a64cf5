from types import SimpleNamespace

from gatewayd.daemon import Gateway, WriterStats
from gatewayd.store.worker import StoreHealth, StoreWorker


class FakePoller:
    def __init__(self, heartbeat):
        self.heartbeat = heartbeat
        self.health = SimpleNamespace(state="online")

    def longest_pause(self):
        return 40.0


def gateway(writer_beat, poller_beats):
    g = Gateway.__new__(Gateway)
    g.writer = WriterStats(heartbeat=writer_beat)
    g.pollers = {f"p{i}": FakePoller(b) for i, b in enumerate(poller_beats)}
    g.worker = StoreWorker.__new__(StoreWorker)
    g.worker.health = StoreHealth(state="ok")
    return g


def test_progress_needs_a_turning_writer_and_live_pollers():
    assert gateway(99.0, [95.0, 70.0]).making_progress(100.0, 2.0)
    assert not gateway(90.0, [99.0]).making_progress(100.0, 2.0), "stuck writer"
    assert not gateway(99.0, [99.0, 50.0]).making_progress(100.0, 2.0), "a poller stopped turning"


def test_status_line():
    g = gateway(0, [0, 0])
    g.pollers["p1"].health.state = "offline"
    g.writer.written, g.writer.queued = 1234, 7
    assert g.status_line() == "1/2 devices online, 1234 readings stored, 7 queued"


def test_status_line_leads_with_a_degraded_store():
    g = gateway(0, [0])
    g.worker.health = StoreHealth(
        state="disk_full",
        last_error="the disk is full (/var/lib/gatewayd/gatewayd.sqlite3: database or disk is full)",
        readings_dropped=12,
    )
    g.writer.written = 5
    assert g.status_line() == (
        "STORE DISK FULL: the disk is full (/var/lib/gatewayd/gatewayd.sqlite3: database or "
        "disk is full); 1/1 devices online, 5 readings stored, 0 queued, 12 readings dropped"
    )


def test_status_line_says_when_the_file_system_bounds_the_store():
    g = gateway(0, [0])
    g.worker.health.disk_full = True
    assert g.status_line().startswith("STORE DISK FULL: the file system is full: the oldest readings are evicted")
