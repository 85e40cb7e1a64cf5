"""Node sample cycle in the MicroPython unix port: time per channel per sample with every check,
heap allocated per sample, and the application's heap for 8 channels (or --channels; live after
start-up, and its peak: what it needs of the smallest heap it boots and runs in, beyond what the
bench's own script has in use), beside a plain float ring-buffer Z-score measured in the same run.

Two layouts of the firmware's code, both compiled with mpy-cross: .mpy files on the
filesystem (what `edge-flash deploy` installs on stock MicroPython: the bytecode is loaded
into the heap), and the same files in a ROMFS image, imported in place (what a board with a
ROMFS partition runs: the bytecode stays in flash). A frozen build also keeps the names the
modules intern in flash: its live heap is at most the ROMFS figure less those.

    .venv/bin/python bench/firmware_sample.py [--samples 10000] [--heap 128k] [--channels 8] [--instructions]

Times on a shared machine move with its load; --instructions also counts the instructions
per channel-sample of the cycle and of the reference under valgrind, which do not.
The 32-bit heap (the ESP32's object sizes): bench/firmware_heap32.py.

Last line: a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatewayd.demo.virtual_node import HEAP_SIZE, find_firmware_dir, find_micropython, micropython_env  # noqa: E402
from edge_flash.build import compile_firmware, find_mpy_cross  # noqa: E402

TARGET_HEAP = 32 * 1024  # for 8 channels
PATTERN = 64  # samples per channel in the bench's replay data (firmware_sample_mp.PATTERN)
READS = 1000  # Modbus reads timed (firmware_sample_mp.READS)
STABLE_SPAN = 4096  # a smallest heap counts only if every heap up to this much larger works too


def bench_config(channel_count: int) -> dict:
    channel = {
        "source": {"type": "sim", "signal": 0},
        "resolution": 0.01,
        "physical": [-100, 100],
        "bounds": [-50, 50],
        "zscore": {"window": 32, "threshold": 6},
        "rate": {"limit": 20, "horizon_s": 1},
        "consecutive": 3,
        "trips": ["out"],
    }
    channels = [dict(channel, name="ch%d" % i) for i in range(channel_count)]
    return {
        "node_id": 1,
        "sample_period_ms": 100,
        "reset_code": 1,
        "outputs": [{"name": "out", "pin": 1}],
        "channels": channels,
        "modbus": {"tcp": {"port": 502}},
    }


def compile_script(out: Path) -> None:
    """The bench's own MicroPython script, compiled as the firmware is: run from source, its
    parse and compile would need some 20 KB of heap of their own."""
    out.mkdir()
    source = REPO / "bench" / "firmware_sample_mp.py"
    subprocess.run([find_mpy_cross(), "-o", str(out / "firmware_sample_mp.mpy"), str(source)], check=True)


def romfs_image(folder: Path) -> bytes:
    from mpremote.romfs import make_romfs

    with contextlib.redirect_stdout(io.StringIO()):  # it lists the files it adds
        return make_romfs(str(folder), mpy_cross=False)


class Layout:
    """Where the firmware's code lives for a run: a folder of .mpy files, or a ROMFS image."""

    def __init__(self, name: str, path: Path, image: Path | None = None):
        self.name, self.path, self.image = name, path, image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--heap", default=HEAP_SIZE, help="MicroPython heap size (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; the median is reported")
    parser.add_argument(
        "--channels", type=int, default=8, help="channels in the node's configuration (1..16, default: %(default)s)"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count the instructions per channel-sample of the cycle and the reference under"
        " valgrind (callgrind): repeatable whatever else the machine is doing; some minutes",
    )
    parser.add_argument("--instruction-samples", type=int, default=2000, help="samples counted with --instructions")
    args = parser.parse_args(argv)
    if not 1 <= args.channels <= 16:
        parser.error("--channels must be 1..16")
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind (Debian: apt install valgrind)")
    with tempfile.TemporaryDirectory(prefix="firmware-bench-") as tmp:
        work = Path(tmp)
        compile_firmware(find_firmware_dir(), work / "mpy", board="virtual")
        compile_script(work / "script")
        (work / "app.romfs").write_bytes(romfs_image(work / "mpy"))
        (work / "config.json").write_text(json.dumps(bench_config(args.channels)))
        mpy = Layout("mpy", work / "mpy")
        rom = Layout("rom", work / "empty", work / "app.romfs")
        rom.path.mkdir()
        rows = []
        # The image is read into the heap here (it is flash on a board): the ROMFS runs get its size on top.
        rom_heap = str(_bytes(args.heap) + (work / "app.romfs").stat().st_size)
        for run in range(args.runs):
            node = _run(args, work, mpy, "node", args.heap)
            node_rom = _run(args, work, rom, "node", rom_heap)
            reference = _run(args, work, mpy, "reference", args.heap)
            if node is None or node_rom is None or reference is None:
                return 1
            rows.append((node, node_rom, reference))
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
        image_bytes = (work / "app.romfs").stat().st_size
        peak = _node_peak(args, work, mpy)
        # The image, read into the heap before the node starts, is not counted.
        peak_rom = _node_peak(args, work, rom)
        peak_steps = _node_peak(args, work, mpy, "boot-steps")
        peak_rom_steps = _node_peak(args, work, rom, "boot-steps")
        instructions = _instructions(args, work, mpy) if args.instructions else None
    if None in (peak, peak_rom, peak_steps, peak_rom_steps):
        return 1
    rows.sort(key=lambda r: r[0][0])
    ((elapsed, used, d_elapsed, d_used, heap, energised, r_elapsed, r_used, _), node_rom, (f_elapsed, f_used)) = rows[
        len(rows) // 2
    ]
    samples, channels = args.samples, args.channels
    figures = {
        "us_per_channel_sample": round(elapsed / samples / channels, 3),
        "alloc_bytes_per_sample": round(used / samples, 3),
        "detector_us_per_sample": round(d_elapsed / samples, 3),
        "detector_alloc_bytes_per_sample": round(d_used / samples, 3),
        "reference_float_z_us_per_sample": round(f_elapsed / samples / channels, 3),
        "reference_float_z_alloc_bytes_per_sample": round(f_used / samples / channels, 1),
        "read_all_channels_us": round(r_elapsed / READS, 2),
        "read_alloc_bytes": round(r_used / READS, 3),
        "peak_heap_bytes": peak,
        "live_heap_bytes": heap,
        "peak_heap_rom_bytes": peak_rom,
        "peak_heap_steps_bytes": peak_steps,
        "peak_heap_rom_steps_bytes": peak_rom_steps,
        "live_heap_rom_bytes": node_rom[4],
        "qstr_rom_bytes": node_rom[8],
        "live_heap_frozen_bytes_at_most": node_rom[4] - node_rom[8],
        "romfs_image_bytes": image_bytes,
        "channels": channels,
        "samples": samples,
        "heap_size": args.heap,
    }
    figures["time_ratio_to_reference"] = round(
        figures["us_per_channel_sample"] / figures["reference_float_z_us_per_sample"], 2
    )
    if instructions is not None:
        figures["instructions_per_channel_sample"] = instructions[0]
        figures["reference_instructions_per_channel_sample"] = instructions[1]
        figures["instruction_ratio_to_reference"] = round(instructions[0] / instructions[1], 2)
    print(
        f"full cycle, all checks + registers : {figures['us_per_channel_sample']:8.3f} us per channel-sample"
        f"  {figures['alloc_bytes_per_sample']:8.3f} B allocated per sample (target < 5 us, 0 B)"
    )
    print(
        f"detectors alone                    : {figures['detector_us_per_sample']:8.3f} us per channel-sample"
        f"  {figures['detector_alloc_bytes_per_sample']:8.3f} B per sample"
    )
    print(
        f"reference: float ring-buffer Z     : {figures['reference_float_z_us_per_sample']:8.3f} us per channel-sample"
        f"  {figures['reference_float_z_alloc_bytes_per_sample']:8.1f} B per channel-sample"
    )
    print(f"ratio full cycle / reference       : {figures['time_ratio_to_reference']:8.2f}")
    if instructions is not None:
        print(
            f"instructions per channel-sample    : {instructions[0]:8d} full cycle, {instructions[1]} reference,"
            f" ratio {figures['instruction_ratio_to_reference']:.2f} (callgrind, {args.instruction_samples} samples)"
        )
    print(
        f"Modbus read of every channel       : {figures['read_all_channels_us']:8.2f} us"
        f"  {figures['read_alloc_bytes']:8.3f} B allocated (function 4, {channels * 10} registers in {(channels + 11) // 12} request(s); packs the floats)"
    )
    print(
        f"application heap, {channels} channels (target < {TARGET_HEAP} B for 8; 64-bit objects, larger than the ESP32's):"
    )
    print("  (peak: what start-up needs of the smallest heap it runs in, fragmentation included;")
    print(
        "   in brackets, the same with the collector run only where the application asks, as firmware_heap32.py measures)"
    )
    print(f"  .mpy files on the filesystem     : peak {peak:6d} B ({peak_steps:6d} B), live after start-up {heap:6d} B")
    print(
        f"  .mpy files in ROMFS (in place)   : peak {peak_rom:6d} B ({peak_rom_steps:6d} B), live after start-up {node_rom[4]:6d} B"
        f"  (image {image_bytes} B of flash)"
    )
    print(
        f"  frozen into the firmware         :              live after start-up {node_rom[4] - node_rom[8]:6d} B at most"
        f"  (ROMFS less the {node_rom[8]} B of names it interns, which a frozen build keeps in flash)"
    )
    if not energised or not node_rom[5]:
        print("warning: outputs not energised after warm-up", file=sys.stderr)
    print(json.dumps(figures))
    return 0


def _bytes(size: str) -> int:
    """A MicroPython -X heapsize value ("128k", "1M", "65536") in bytes."""
    units = {"k": 1024, "m": 1024 * 1024}
    return int(size[:-1]) * units[size[-1].lower()] if size[-1].lower() in units else int(size)


def _run(args: argparse.Namespace, work: Path, layout: Layout, mode: str, heap: str) -> list[int] | None:
    proc = _micropython(args, work, layout, mode, heap)
    tag = {"node": "NODE", "reference": "REFERENCE"}[mode]
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(tag)), None)
    if proc.returncode != 0 or line is None:
        print(f"{mode} run ({layout.name}) failed:\n{proc.stdout}{proc.stderr}", file=sys.stderr)
        return None
    figures = [int(v) for v in line.split()[1:]]
    if mode == "node":
        # Heap taken by the names (qstrs) the node interned: a frozen build has them in flash.
        before, after = (int(v) for v in re.findall(r"n_total_bytes=(\d+)", proc.stdout))
        figures.append(after - before)
    return figures


def _node_peak(args: argparse.Namespace, work: Path, layout: Layout, mode: str = "boot") -> int | None:
    """The most of the heap the node's start-up needs (fragmentation included: the collector
    does not move objects): the collector's pool in the smallest -X heapsize (to 64 bytes) in
    which the bench script starts the node from its config.json, serves TCP and runs 300
    cycles with its outputs on, less what the script has in use when the node's start-up
    begins. Mode "boot-steps" runs the collector only where the application asks for it, as
    the 32-bit bench (firmware_heap32.py) must."""

    def boot(size: int) -> tuple[bool, list[int] | None]:
        """Whether the run completes; what it had in use as the start-up began, if it got there."""
        proc = _micropython(args, work, layout, mode, str(size))
        setup = next((ln.split()[1:] for ln in proc.stdout.splitlines() if ln.startswith("SETUP")), None)
        return proc.returncode == 0 and "BOOT 1" in proc.stdout, setup and [int(v) for v in setup]

    low, high = 1024, 256 * 1024
    if not boot(high)[0]:
        print(f"boot run ({layout.name}) failed in {high} bytes of heap", file=sys.stderr)
        return None
    while high - low > 64:
        mid = (low + high) // 2
        if boot(mid)[0]:
            high = mid
        else:
            low = mid
    # Where the collector runs, and so what fragments, shifts with the heap's size: a run may
    # fit in a heap a little smaller than one it fails in. The figure is the size from which
    # every heap up to STABLE_SPAN larger works (checked every 256 bytes).
    while True:
        failing = next((size for size in range(high + 256, high + STABLE_SPAN, 256) if not boot(size)[0]), None)
        if failing is None:
            break
        high = failing + 64
    if boot(high - 64)[1] is None:
        print(f"boot run ({layout.name}): the bench's own setup, not the node, sets the smallest heap", file=sys.stderr)
        return None
    pool, in_use = boot(high)[1]
    return pool - in_use


def _instructions(args: argparse.Namespace, work: Path, layout: Layout) -> tuple[int, int]:
    """Instructions per channel-sample of the full cycle and of the float reference, counted by
    callgrind: each run with and without the samples, so start-up and the interpreter's own
    cost cancel."""

    def count(mode: str, samples: int) -> int:
        with tempfile.TemporaryDirectory(dir=work) as out:
            wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out"]
            proc = _micropython(args, work, layout, mode, args.heap, samples=samples, wrapper=wrapper)
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or found is None:
            raise SystemExit(f"{mode} run under valgrind failed:\n{proc.stdout}{proc.stderr}")
        return int(found.group(1))

    samples = args.instruction_samples
    per_sample = []
    for mode in ("cycles", "reference"):
        print(f"counting instructions: {mode}", file=sys.stderr)
        per_sample.append((count(mode, samples) - count(mode, 0)) // (samples * args.channels))
    return per_sample[0], per_sample[1]


def _micropython(
    args: argparse.Namespace,
    work: Path,
    layout: Layout,
    mode: str,
    heap: str,
    samples: int | None = None,
    wrapper: list[str] | None = None,
):
    with tempfile.TemporaryDirectory(prefix="flash-", dir=work) as flash:
        Path(flash, "config.json").write_text((work / "config.json").read_text())
        cmd = [
            *(wrapper or []),
            find_micropython(),
            "-X",
            f"heapsize={heap}",
            "-m",
            "firmware_sample_mp",
            str(args.samples if samples is None else samples),
            mode,
            flash,
            str(args.channels),
        ]
        if layout.image is not None:
            cmd.append(str(layout.image))
        env = micropython_env(layout.path, work / "script")
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


if __name__ == "__main__":
    raise SystemExit(main())
