"""Node sample cycle in the MicroPython unix port: time per channel per sample with every check,
heap allocated per sample, and the application's heap for 8 channels, beside a plain float
ring-buffer Z-score measured in the same run.

    .venv/bin/python bench/firmware_sample.py [--samples 10000] [--heap 128k]

Last line: a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatewayd.virtual_node import HEAP_SIZE, find_firmware_dir, find_micropython, micropython_env  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--heap", default=HEAP_SIZE, help="MicroPython heap size (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; the median is reported")
    args = parser.parse_args(argv)
    rows = []
    for run in range(args.runs):
        node = _run(args, "node")
        reference = _run(args, "reference")
        if node is None or reference is None:
            return 1
        rows.append((node, reference))
        print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    rows.sort(key=lambda r: r[0][0])
    (elapsed, used, d_elapsed, d_used, heap, code, energised), (f_elapsed, f_used) = rows[len(rows) // 2]
    samples, channels = args.samples, 8
    figures = {
        "us_per_channel_sample": round(elapsed / samples / channels, 3),
        "alloc_bytes_per_sample": round(used / samples, 3),
        "detector_us_per_sample": round(d_elapsed / samples, 3),
        "detector_alloc_bytes_per_sample": round(d_used / samples, 3),
        "reference_float_z_us_per_sample": round(f_elapsed / samples / channels, 3),
        "reference_float_z_alloc_bytes_per_sample": round(f_used / samples / channels, 1),
        "peak_heap_bytes": heap,
        "code_heap_bytes": code,
        "data_heap_bytes": heap - code,
        "channels": channels,
        "samples": samples,
        "heap_size": args.heap,
    }
    figures["time_ratio_to_reference"] = round(figures["us_per_channel_sample"] / figures["reference_float_z_us_per_sample"], 2)
    print(f"full cycle, all checks + registers : {figures['us_per_channel_sample']:8.3f} us per channel-sample"
          f"  {figures['alloc_bytes_per_sample']:8.3f} B allocated per sample (target < 5 us, 0 B)")
    print(f"detectors alone                    : {figures['detector_us_per_sample']:8.3f} us per channel-sample"
          f"  {figures['detector_alloc_bytes_per_sample']:8.3f} B per sample")
    print(f"reference: float ring-buffer Z     : {figures['reference_float_z_us_per_sample']:8.3f} us per channel-sample"
          f"  {figures['reference_float_z_alloc_bytes_per_sample']:8.1f} B per channel-sample")
    print(f"ratio full cycle / reference       : {figures['time_ratio_to_reference']:8.2f}")
    print(f"application heap, {channels} channels       : {heap} B = {code} B code and configuration + {heap - code} B node state"
          f" (target < 32768 B; heap {args.heap}, 64-bit objects: about twice the ESP32's)")
    if not energised:
        print("warning: outputs not energised after warm-up", file=sys.stderr)
    print(json.dumps(figures))
    return 0


def _run(args: argparse.Namespace, mode: str) -> list[int] | None:
    with tempfile.TemporaryDirectory(prefix="firmware-bench-") as flash:
        proc = subprocess.run(
            [find_micropython(), "-X", f"heapsize={args.heap}", str(REPO / "bench" / "firmware_sample_mp.py"),
             str(args.samples), mode, flash],
            env=micropython_env(find_firmware_dir()), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    tag = "NODE" if mode == "node" else "REFERENCE"
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(tag)), None)
    if proc.returncode != 0 or line is None:
        print(f"{mode} run failed:\n{proc.stdout}{proc.stderr}", file=sys.stderr)
        return None
    return [int(v) for v in line.split()[1:]]


if __name__ == "__main__":
    raise SystemExit(main())
