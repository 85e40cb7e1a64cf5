# Runs inside the MicroPython unix port (see bench/firmware_sample.py): the node's full sample
# cycle on 8 channels, or (mode "reference") a plain float ring-buffer Z-score.
import gc
import sys
import time

import array  # noqa: E402

MODE = sys.argv[2] if len(sys.argv) > 2 else "node"
gc.collect()
BASE = gc.mem_alloc()
if MODE == "node":  # the reference runs alone, without the firmware's modules in its heap
    # What a node loads (as app.py does): the node, its transport, the flash; not the simulator.
    import detectors as det
    import modbus_tcp  # noqa: F401
    import regmap  # noqa: F401
    from flashfs import Flash
    from node import Node


class Output:
    def __init__(self, name):
        self.name = name

    def set(self, energised):
        pass


class ResetInput:
    def pressed(self):
        return False

CHANNELS = 8
SAMPLES = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
PATTERN = 64  # a repeating stretch of noisy counts per channel, preallocated


class ReplaySampler:
    def __init__(self, n):
        self.data = array.array("i", bytearray(4 * n * PATTERN))
        x = 12345
        for i in range(n * PATTERN):
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            self.data[i] = 500 + (x % 101) - 50
        self.status = bytearray(n)
        self.t = 0
        self.base = 0

    def update(self):
        self.t = (self.t + 1) & (PATTERN - 1)
        self.base = self.t * CHANNELS

    def read(self, index):
        return self.data[self.base + index]


class BenchBoard:
    def __init__(self):
        self.flash = Flash(sys.argv[3] if len(sys.argv) > 3 else "/tmp/firmware-bench-flash")
        self.reset_input = ResetInput()

    def sampler(self, channels, period_ms):
        return ReplaySampler(len(channels))

    def outputs(self, specs):
        return [Output(name) for name, _, _ in specs]

    def watchdog(self, timeout_ms):
        return None


def node_config():
    import config  # validated, then unloaded, as app.py does

    channel = {"source": {"type": "sim", "signal": 0}, "resolution": 0.01, "physical": [-100, 100],
               "bounds": [-50, 50], "zscore": {"window": 32, "threshold": 6}, "rate": {"limit": 20, "horizon_s": 1},
               "consecutive": 3, "trips": ["out"]}  # fmt: skip
    channels = []
    for i in range(CHANNELS):
        ch = dict(channel)
        ch["name"] = "ch%d" % i
        channels.append(ch)
    cfg = config.from_dict({"node_id": 1, "sample_period_ms": 100, "reset_code": 1,
                            "outputs": [{"name": "out", "pin": 1}], "channels": channels,
                            "modbus": {"tcp": {"port": 502}}})  # fmt: skip
    del sys.modules["config"]
    return cfg


def cycles(node, n):
    now = time.ticks_ms()
    for _ in range(n):
        node.sample(now)


class FloatZ:
    """The reference: a float ring buffer with running sums, as one would first write it."""

    def __init__(self, window):
        self.ring = [0.0] * window
        self.i = 0
        self.n = window
        self.s = 0.0
        self.s2 = 0.0
        self.z = 0.0

    def update(self, x):
        old = self.ring[self.i]
        self.ring[self.i] = x
        self.i = (self.i + 1) % self.n
        self.s += x - old
        self.s2 += x * x - old * old
        mean = self.s / self.n
        var = self.s2 / self.n - mean * mean
        self.z = (x - mean) / var**0.5 if var > 0 else 0.0
        return abs(self.z) > 4.0


def float_run(zs, data, n):
    for t in range(n):
        base = (t & (PATTERN - 1)) * CHANNELS
        for i in range(CHANNELS):
            zs[i].update(data[base + i] * 0.01)


def measure(fn, *args):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    t0 = time.ticks_us()
    fn(*args)
    elapsed = time.ticks_diff(time.ticks_us(), t0)
    used = gc.mem_alloc() - before
    gc.enable()
    return elapsed, used


if MODE == "node":
    cfg = node_config()
    gc.collect()
    CODE = gc.mem_alloc() - BASE  # module code, and the configuration objects
    node = Node(cfg, BenchBoard())
    cycles(node, 300)  # past warm-up, outputs energised
    gc.collect()
    heap = gc.mem_alloc() - BASE - 4 * len(node.sampler.data)  # the replay data is the bench's
    elapsed, used = measure(cycles, node, SAMPLES)
    detector = det.ChannelDetector(window_bits=5, rate_limit=2000, rate_horizon=10, consecutive=3)
    data = node.sampler.data

    def detector_only(n):
        for t in range(n):
            detector.update(data[(t & (PATTERN - 1)) * CHANNELS])

    d_elapsed, d_used = measure(detector_only, SAMPLES)
    print("NODE", elapsed, used, d_elapsed, d_used, heap, CODE, node.latch.energised)
else:
    # In its own process: the reference fills the heap with float objects.
    data = ReplaySampler(CHANNELS).data
    zs = [FloatZ(32) for _ in range(CHANNELS)]
    float_run(zs, data, 100)
    # Heap use over 10 samples with the collector off; time over the full run with it on.
    _, f_used = measure(float_run, zs, data, 10)
    gc.collect()
    t0 = time.ticks_us()
    float_run(zs, data, SAMPLES)
    f_elapsed = time.ticks_diff(time.ticks_us(), t0)
    print("REFERENCE", f_elapsed, f_used * SAMPLES // 10)
