from types import SimpleNamespace

from gatewayd.daemon import Gateway, WriterStats


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
