# The main loop between samples: with one transport it waits there until the next sample is
# due; with two it waits in short slices, so a request on either is answered promptly.
import time

from node_fixtures import fresh


class RecordingServer:
    def __init__(self):
        self.waits = []

    def poll(self, timeout_ms):
        self.waits.append(timeout_ms)
        if timeout_ms > 0:
            time.sleep_ms(timeout_ms)


def run_for(node, servers, ms):
    end = time.ticks_add(time.ticks_ms(), ms)
    node.run(servers, should_stop=lambda: time.ticks_diff(end, time.ticks_ms()) <= 0)


def test_one_transport_waits_until_the_next_sample():
    node, _ = fresh("loop-one")
    only = RecordingServer()
    run_for(node, [only], 350)
    assert max(only.waits) > 50  # a 100 ms period: long waits, few turns of the loop
    assert node.samples >= 3


def test_two_transports_wait_in_slices():
    node, _ = fresh("loop-two")
    tcp, rtu = RecordingServer(), RecordingServer()
    run_for(node, [tcp, rtu], 350)
    assert max(tcp.waits) == 0 and 0 < max(rtu.waits) <= 5
    assert len(tcp.waits) > 30  # polled every few milliseconds, not once a sample
    assert node.samples >= 3
