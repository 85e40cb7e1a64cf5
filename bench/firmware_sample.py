"""Node sample cycle in the MicroPython unix port: time per channel per sample with every check,
heap allocated per sample, and the application's heap for 8 channels (or --channels; live after
start-up, and its peak: the smallest heap it boots and runs in, less what the bench's own script
needs), beside a plain float ring-buffer Z-score measured in the same run.

Two layouts of the firmware's code, both compiled with mpy-cross: .mpy files on the
filesystem (what `edge-flash deploy` installs on stock MicroPython: the bytecode is loaded
into the heap), and the same files in a ROMFS image, imported in place (what a board with a
ROMFS partition runs: the bytecode stays in flash). A frozen build also keeps the names the
modules intern in flash: its live heap is at most the ROMFS figure less those.

    .venv/bin/python bench/firmware_sample.py [--samples 10000] [--heap 128k] [--channels 8]

Last line: a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatewayd.virtual_node import HEAP_SIZE, find_firmware_dir, find_micropython, micropython_env  # noqa: E402
from tools.flash.build import compile_firmware, find_mpy_cross  # noqa: E402

TARGET_HEAP = 32 * 1024  # for 8 channels
PATTERN = 64  # samples per channel in the bench's replay data (firmware_sample_mp.PATTERN)
READS = 1000  # Modbus reads timed (firmware_sample_mp.READS)
STABLE_SPAN = 4096  # a smallest heap counts only if every heap up to this much larger works too


def bench_config(channel_count: int) -> dict:
    channel = {"source": {"type": "sim", "signal": 0}, "resolution": 0.01, "physical": [-100, 100],
               "bounds": [-50, 50], "zscore": {"window": 32, "threshold": 6}, "rate": {"limit": 20, "horizon_s": 1},
               "consecutive": 3, "trips": ["out"]}  # fmt: skip
    channels = [dict(channel, name="ch%d" % i) for i in range(channel_count)]
    return {"node_id": 1, "sample_period_ms": 100, "reset_code": 1, "outputs": [{"name": "out", "pin": 1}],
            "channels": channels, "modbus": {"tcp": {"port": 502}}}  # fmt: skip


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
        "--channels",
        type=int,
        default=8,
        help="channels in the node's configuration (1..16, default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.channels <= 16:
        parser.error("--channels must be 1..16")
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
        peak_rom = _node_peak(args, work, rom)  # the image is read into the heap in both runs, so it cancels
    if peak is None or peak_rom is None:
        return 1
    rows.sort(key=lambda r: r[0][0])
    (
        (elapsed, used, d_elapsed, d_used, heap, energised, r_elapsed, r_used, _),
        node_rom,
        (f_elapsed, f_used),
    ) = rows[len(rows) // 2]
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
    print(
        f"Modbus read of every channel       : {figures['read_all_channels_us']:8.2f} us"
        f"  {figures['read_alloc_bytes']:8.3f} B allocated (function 4, {channels * 10} registers in {(channels + 11) // 12} request(s); packs the floats)"
    )
    print(
        f"application heap, {channels} channels (target < {TARGET_HEAP} B for 8; 64-bit objects, larger than the ESP32's):"
    )
    print("  (peak: the heap it needs to boot and run, fragmentation included)")
    print(f"  .mpy files on the filesystem     : peak {peak:6d} B, live after start-up {heap:6d} B")
    print(
        f"  .mpy files in ROMFS (in place)   : peak {peak_rom:6d} B, live after start-up {node_rom[4]:6d} B"
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


def _smallest_heap(args: argparse.Namespace, work: Path, layout: Layout, mode: str = "boot") -> int | None:
    """The smallest -X heapsize (to 64 bytes) in which the bench script completes `mode`:
    "boot" starts the node from its config.json, serves TCP and runs 300 cycles with its
    outputs on; "idle" does everything but start the node. Their difference is the node's
    peak heap at boot, fragmentation included (the collector does not move objects)."""
    tag = {"boot": "BOOT 1", "idle": "IDLE"}[mode]

    def completes(size: int) -> bool:
        proc = _micropython(args, work, layout, mode, str(size))
        return proc.returncode == 0 and tag in proc.stdout

    low, high = 1024, 256 * 1024
    if not completes(high):
        print(f"{mode} run ({layout.name}) failed in {high} bytes of heap", file=sys.stderr)
        return None
    while high - low > 64:
        mid = (low + high) // 2
        if completes(mid):
            high = mid
        else:
            low = mid
    # Where the collector runs, and so what fragments, shifts with the heap's size: a run may
    # fit in a heap a little smaller than one it fails in. The figure is the size from which
    # every heap up to STABLE_SPAN larger works (checked every 256 bytes).
    while True:
        failing = next(
            (size for size in range(high + 256, high + STABLE_SPAN, 256) if not completes(size)), None
        )
        if failing is None:
            return high
        high = failing + 64


def _node_peak(args: argparse.Namespace, work: Path, layout: Layout) -> int | None:
    """The node's peak heap at boot: the smallest heap it boots in, less the smallest heap the
    bench's own script (its code, replay data and, for ROMFS, the image) completes in."""
    boot = _smallest_heap(args, work, layout, "boot")
    idle = _smallest_heap(args, work, layout, "idle")
    return None if boot is None or idle is None else boot - idle


def _micropython(args: argparse.Namespace, work: Path, layout: Layout, mode: str, heap: str):
    with tempfile.TemporaryDirectory(prefix="flash-", dir=work) as flash:
        Path(flash, "config.json").write_text((work / "config.json").read_text())
        cmd = [find_micropython(), "-X", f"heapsize={heap}", "-m", "firmware_sample_mp",
               str(args.samples), mode, flash, str(args.channels)]  # fmt: skip
        if layout.image is not None:
            cmd.append(str(layout.image))
        env = micropython_env(layout.path, work / "script")
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


if __name__ == "__main__":
    raise SystemExit(main())
