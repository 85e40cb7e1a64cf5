# What the node's tests share: a board whose sampler the test sets, and a two-channel node.
import os
import time

import config
from hal_unix import Flash, Output, ResetInput, Watchdog
from helpers import scratch
from node import Node

STATE_ROOT = scratch("node-%d" % (time.ticks_ms() % 100000))


class ScriptedSampler:
    def __init__(self, n):
        self.values = [0] * n
        self.status = bytearray(n)

    def update(self):
        pass

    def read(self, index):
        return self.values[index]


class FakeBoard:
    def __init__(self, root):
        self.flash = Flash(root)
        self.reset_input = ResetInput()
        self.sampler_obj = None
        self.out = []
        self.wdt = None

    def sampler(self, channels, period_ms):
        self.sampler_obj = ScriptedSampler(len(channels))
        return self.sampler_obj

    def outputs(self, specs):
        self.out = [Output(name) for name, _, _ in specs]
        return self.out

    def watchdog(self, timeout_ms):
        self.wdt = Watchdog(timeout_ms)
        return self.wdt


def node_config(**channel):
    ch = {"name": "level", "unit": "m", "source": {"type": "sim", "signal": 0}, "resolution": 0.01,
          "physical": [-10, 10], "bounds": [-5, 5], "zscore": {"window": 8, "threshold": 4, "tunable": [2, 6]},
          "rate": {"limit": 2.0, "horizon_s": 0.5}, "consecutive": 1, "trips": ["valve"]}
    ch.update(channel)
    return config.from_dict({
        "node_id": 5, "sample_period_ms": 100, "reset_code": 1234, "watchdog_ms": 1000,
        "outputs": [{"name": "valve", "pin": 4}], "channels": [ch, dict(ch, name="spare", trips=[])],
        "modbus": {"tcp": {"port": 502}},
    })


def fresh(name):
    root = STATE_ROOT + "-" + name
    try:
        os.remove(root + "/trip.json")
    except OSError:
        pass
    board = FakeBoard(root)
    return Node(node_config(), board), board


def run(node, board, values, n):
    """`n` cycles with the channels' values held at `values`."""
    for _ in range(n):
        for i in range(len(values)):
            board.sampler_obj.values[i] = values[i]
        node.sample(time.ticks_ms())


def cycles(node, n):
    """`n` cycles at one instant, the sampler's values unchanged."""
    now = time.ticks_ms()
    for _ in range(n):
        node.sample(now)
