"""The gateway on an emulated Raspberry Pi beside the same on this machine, in one run: the
Debian package for arm64 (a Raspberry Pi 4 or 5 on Raspberry Pi OS, Debian 13 by default)
installed in an arm64 root whose programs run under qemu-user-static, and the package for this
machine's architecture installed in a root of the same release. In each, bench/pi_probe.py runs
on the package's own Python (/opt/edge-gateway/bin/python) and measures the first model's
training time, the import of the training code, scoring latency per window (p50, p99) and peak
RSS; the ratio emulated / native is what the emulation costs here.

    sudo .venv/bin/python bench/emulated_pi.py [--release trixie] [--runs 3] [--minutes 5] [--windows 300]

Needs root (systemd-nspawn). The packages and the roots are made by tools/package-test-root
(`make deb` and tools/debian-root; kept in build/, shared with the package tests).

How emulation distorts: qemu-user translates each arm64 instruction into several x86-64 ones
and has no SIMD of its own to map NEON onto well, so CPU-bound work (numpy, scikit-learn, the
LiteRT interpreter) and above all starting processes and importing modules run 5 to 30 times
slower than natively here, while system calls run natively. A Cortex-A76 (Raspberry Pi 5) is
some 2 to 4 times slower per core than this machine's cores, so the emulated times are an upper
bound for a Pi, not an estimate. Memory is nearer the truth: the same wheels, the same Python,
the same data; ru_maxrss under emulation is qemu's, which adds its translation cache (tens of
MB) to the program's own.

Prints a table, then one line with a JSON object: each figure native and emulated (medians of
--runs), their ratios, and the packages' sizes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "bench" / "pi_probe.py"
FIGURES = ("train_s", "import_training_s", "score_p50_ms", "score_p99_ms", "rss_import_mb", "rss_peak_mb")
NSPAWN = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit"]
# A Raspberry Pi 4's CPU, not qemu's default with every extension: numpy's and LiteRT's kernels
# for SVE and SME give wrong results under emulation (tests/packaging/qemu-user.conf).
PI_CPU = "cortex-a72"


def run(cmd: list[str], what: str, timeout: float = 3600) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        sys.exit(f"{what} failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def package_and_root(release: str, arch: str) -> tuple[Path, Path]:
    """The package and its test root (shared with the package tests)."""
    print(f"package and root for {release} {arch}: tools/package-test-root", file=sys.stderr, flush=True)
    deb, image = run([str(REPO / "tools" / "package-test-root"), release, arch], "tools/package-test-root").split()
    return Path(deb), Path(image)


def installed_root(release: str, arch: str, deb: Path, image: Path, work: Path) -> Path:
    """A copy of the release's test root for `arch` with the package installed (not booted)."""
    root = work / f"{release}-{arch}"
    run(["cp", "-a", "--reflink=auto", str(image), str(root)], "copying the root")
    run(
        [
            *NSPAWN,
            f"--directory={root}",
            f"--bind-ro={deb}:/mnt/edge-gateway.deb",
            "dpkg",
            "-i",
            "/mnt/edge-gateway.deb",
        ],
        "dpkg -i",
    )
    return root


def probe(root: Path, args: argparse.Namespace) -> dict[str, float]:
    out = run(
        [*NSPAWN, f"--directory={root}", f"--bind-ro={PROBE}:/mnt/pi_probe.py", f"--setenv=QEMU_CPU={PI_CPU}"]
        + ["/opt/edge-gateway/bin/python"]
        + ["/mnt/pi_probe.py", "--minutes", str(args.minutes), "--windows", str(args.windows)],
        "pi_probe.py",
    )
    return json.loads(out.strip().splitlines()[-1])


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {f: round(statistics.median(r[f] for r in runs), 4) for f in FIGURES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", default="trixie", help="Debian release (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="probe runs per architecture (default: %(default)s)")
    parser.add_argument(
        "--minutes", type=float, default=5.0, help="training data, as pi_probe.py (default: %(default)s)"
    )
    parser.add_argument(
        "--windows", type=int, default=300, help="windows scored, as pi_probe.py (default: %(default)s)"
    )
    args = parser.parse_args()
    native = run(["dpkg", "--print-architecture"], "dpkg").strip()
    arches = {"native": native, "emulated": "arm64"}
    results: dict[str, dict[str, float]] = {}
    sizes: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(dir=REPO / "build") as tmp:
        for side, arch in arches.items():
            deb, image = package_and_root(args.release, arch)
            kib = int(run(["dpkg-deb", "-f", str(deb), "Installed-Size"], "dpkg-deb").strip())
            sizes[arch] = {"deb_bytes": deb.stat().st_size, "installed_bytes": kib * 1024}
            root = installed_root(args.release, arch, deb, image, Path(tmp))
            runs = []
            for n in range(args.runs):
                runs.append(probe(root, args))
                print(f"{side} ({arch}) run {n + 1}/{args.runs}: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
            results[side] = medians(runs)
            shutil.rmtree(root)
    ratio = {
        f: round(results["emulated"][f] / results["native"][f], 2) if results["native"][f] else None for f in FIGURES
    }
    print(
        f"\nDebian {args.release}, medians of {args.runs} runs; {args.minutes:g} min of training data, {args.windows} windows"
    )
    print(f"{'figure':20} {'native ' + native:>16} {'emulated arm64':>16} {'ratio':>8}")
    for f in FIGURES:
        print(f"{f:20} {results['native'][f]:>16} {results['emulated'][f]:>16} {ratio[f]!s:>8}")
    for arch, size in sizes.items():
        print(
            f"package {arch}: {size['deb_bytes'] / 1e6:.1f} MB .deb, {size['installed_bytes'] / 1e6:.0f} MB installed"
        )
    print(json.dumps({"release": args.release, "native_arch": native, **results, "ratio": ratio, "packages": sizes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
