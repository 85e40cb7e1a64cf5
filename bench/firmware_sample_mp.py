# Runs inside the MicroPython unix port, compiled with mpy-cross (see bench/firmware_sample.py):
# the node's full sample cycle on 8 channels, or (mode "reference") a plain float ring-buffer
# Z-score, or (mode "boot") only the node's start-up and a short run, for the smallest heap it
# fits in ("boot-steps": the same with the collector run only where the application asks
# for it), or (mode "cycles") start-up and the sample cycle alone, or (mode "steps") only
# this script's setup, start-up then being run a step at a time from outside (by
# bench/firmware_heap32.py, in the WebAssembly port), on the ESP32's own hardware layer
# (hal_esp32, with a stand-in for its machine module) rather than this script's replay board.
#
# argv: samples mode flash-folder channels [romfs-image]. With an image, the firmware's .mpy files are
# imported from it in place, as from a ROMFS partition (or frozen) on a board: the image is
# flash there, so it is not counted.
import array  # noqa: E402
import gc
import struct
import sys
import time

import micropython

MODE = sys.argv[2] if len(sys.argv) > 2 else "node"
FLASH = sys.argv[3] if len(sys.argv) > 3 else "/tmp/firmware-bench-flash"
CHANNELS = int(sys.argv[4]) if len(sys.argv) > 4 else 8
if len(sys.argv) > 5:
    import os

    import vfs

    # Read into a buffer of its exact size: read() would grow one, and leave the heap
    # fragmented before the node starts.
    IMAGE = bytearray(os.stat(sys.argv[5])[6])
    with open(sys.argv[5], "rb") as f:
        f.readinto(IMAGE)
    vfs.mount(vfs.VfsRom(IMAGE), "/rom")
    sys.path.insert(0, "/rom")
SAMPLES = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
READS = 1000
PATTERN = 64  # a repeating stretch of noisy counts per channel, preallocated


def replay_counts(n):
    data = array.array("i", bytearray(4 * n * PATTERN))
    x = 12345
    for i in range(n * PATTERN):
        # A 16-bit xorshift: on a 32-bit port, wider values would be heap-allocated integers.
        x ^= (x << 7) & 0xFFFF
        x ^= x >> 9
        x ^= (x << 8) & 0xFFFF
        data[i] = 500 + (x % 101) - 50
    return data


# Set once start-up loads the node's modules: given their places in this module's globals
# now, so that start-up does not grow them.
det = Flash = ModbusTcpServer = Node = build_steps = Board = None
# The bench's own replay data comes first and is not counted: the node's heap starts here.
REPLAY = replay_counts(CHANNELS)
gc.collect()
BASE = gc.mem_alloc()
if MODE == "node":
    micropython.qstr_info()  # the interned names before the node's; again once it runs


class Output:
    def __init__(self, name):
        self.name = name

    def set(self, energised):
        pass


class ResetInput:
    def pressed(self):
        return False


class ReplaySampler:
    def __init__(self, n):
        self.data = REPLAY
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
        self.flash = Flash(FLASH)
        self.reset_input = ResetInput()

    def sampler(self, channels, period_ms):
        return ReplaySampler(len(channels))

    def outputs(self, specs):
        return [Output(name) for name, _, _ in specs]

    def watchdog(self, timeout_ms):
        return None


def config_steps():
    """What app.py does first: validate the configuration (a step per channel, see
    config.steps), the validator unloaded once the steps are done."""
    import config

    try:
        return config.load_steps(FLASH + "/config.json")
    finally:
        del sys.modules["config"]  # freed by the caller's collection: this frame still holds it


def load_config():
    """The configuration, collected after each channel as config.load does."""
    for cfg in config_steps():
        gc.collect()
    return cfg


def load_app():
    """On a board, main.py imports the application first (the bench's replay board stands
    in for it in the unix port)."""
    import app  # noqa: F401


def load_node_modules():
    """What app.py does next: load the node, its transport and the flash, and the board's
    hardware layer (not the simulator), then collect."""
    global det, Flash, ModbusTcpServer, Node, build_steps, Board
    import detectors as det
    from flashfs import Flash
    from modbus_tcp import ModbusTcpServer
    from node import Node, build_steps

    if MODE == "steps":
        from hal_esp32 import Board


def make_board(cfg):
    return Board(cfg.reset_pin) if MODE == "steps" else BenchBoard()


def node_steps(cfg, board):
    """Node(cfg, board) a step at a time (see node.build_steps)."""
    return build_steps(cfg, board)


def start_servers(node, board, cfg):
    """The node's transports: the board's own on the ESP32, Modbus TCP on a free port here."""
    if MODE == "steps":
        return board.transports(node.slave, cfg)
    return [ModbusTcpServer(node.slave, port=0, bind="127.0.0.1")]


def start_node(cfg):
    """Start the node and its transport (the node releases the channel configurations)."""
    board = make_board(cfg)
    node = Node(cfg, board)
    return node, start_servers(node, board, cfg)


def start():
    """app.py's start-up: validate the configuration, start the node, run it past warm-up."""
    cfg = load_config()
    gc.collect()
    load_node_modules()
    gc.collect()
    node, servers = start_node(cfg)
    gc.collect()
    cycles(node, 300)  # past warm-up, outputs energised
    gc.collect()
    return node, servers


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


if MODE == "steps":
    pass  # bench/firmware_heap32.py runs load_app, config_steps, load_node_modules, node_steps, ...
elif MODE in ("boot", "boot-steps"):
    # What the collector manages, and what this script has in use as the node's start-up begins.
    print("SETUP", gc.mem_alloc() + gc.mem_free(), BASE)
    if MODE == "boot-steps":
        gc.disable()  # collections only where app.py and config.load ask for them (see firmware_heap32.py)
    node, servers = start()
    print("BOOT", node.latch.energised)
elif MODE == "cycles":
    node, servers = start()
    cycles(node, SAMPLES)  # alone, for an instruction count (firmware_sample.py --instructions)
    print("CYCLES", node.latch.energised)
elif MODE == "node":
    node, servers = start()
    heap = gc.mem_alloc() - BASE
    micropython.qstr_info()
    elapsed, used = measure(cycles, node, SAMPLES)
    detector = det.ChannelDetector(window_bits=5, rate_limit=2000, rate_horizon=10, consecutive=3)
    data = node.sampler.data

    def detector_only(n):
        for t in range(n):
            detector.update(data[(t & (PATTERN - 1)) * CHANNELS])

    d_elapsed, d_used = measure(detector_only, SAMPLES)
    # What moved out of the cycle: a master's read of every channel's registers (function 4),
    # which packs their floats; at most 12 channels (120 registers) per request, as Modbus
    # allows 125.
    requests = []
    for first in range(0, CHANNELS, 12):
        request = bytearray(5)
        struct.pack_into(">BHH", request, 0, 4, 100 + 10 * first, 10 * min(12, CHANNELS - first))
        requests.append(request)
    slave = node.slave
    for request in requests:
        if slave.handle(request, 0, 5) < 3 or slave.response[0] != 4:
            raise SystemExit("read of the channel registers failed: %r" % bytes(slave.response[:3]))

    def reads(n):
        for _ in range(n):
            for request in requests:
                slave.handle(request, 0, 5)

    r_elapsed, r_used = measure(reads, READS)
    print("NODE", elapsed, used, d_elapsed, d_used, heap, node.latch.energised, r_elapsed, r_used)
else:
    # In its own process: the reference fills the heap with float objects. Run inside a
    # function: the float rings scatter live objects over the whole heap, and a later growth
    # of this module's globals could then find no free run long enough.
    def reference():
        data = REPLAY
        zs = [FloatZ(32) for _ in range(CHANNELS)]
        float_run(zs, data, 100)
        # Heap use over 4 samples with the collector off (more would not fit in the heap at 16
        # channels); time over the full run with it on.
        _, f_used = measure(float_run, zs, data, 4)
        gc.collect()
        t0 = time.ticks_us()
        float_run(zs, data, SAMPLES)
        return time.ticks_diff(time.ticks_us(), t0), f_used * SAMPLES // 4

    print("REFERENCE", *reference())
