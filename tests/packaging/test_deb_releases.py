"""The package on each system a gateway runs beside the one the lifecycle tests use: Debian 13
(Raspberry Pi OS since October 2025, Python 3.13) and Debian 12 (Python 3.11), on amd64 and on
arm64, the Raspberry Pi's, which runs here under qemu-user-static. Each is built for its own
release and architecture (`make deb RELEASE=... ARCH=...`), installed with no network into a
minbase root of that release and architecture booted under systemd-nspawn, and run under its
hardened unit against a virtual node on the host until it has trained its first model and
scored windows with it.

Under emulation the unit runs with a drop-in (qemu-user.conf) that turns off the settings that
need a mount namespace of the service's own, which systemd cannot set up under qemu-user; the
rest of the unit is as shipped, its capabilities and device policy enforced, its seccomp filters
accepted but not enforced (qemu-user has no seccomp). The amd64 packages run under the whole unit,
checked here and in test_deb_lifecycle. Emulated, everything
takes 5 to 20 times longer: the waits are long, and say so when they run out. Debian 13's
systemd starts services under emulation only with QEMU 10 or newer (tools/ensure-binfmt)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.nspawn import Container, architecture, release
from tests.packaging.test_deb_lifecycle import CONFIG, gatewayd_status, point_at, readings, unit_property, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

PYTHON = {"bookworm": "python3.11", "trixie": "python3.13"}
EMULATION_DROP_IN = Path(__file__).with_name("qemu-user.conf")
SYSTEMS = [
    (codename, arch)
    for codename in ("bookworm", "trixie")
    for arch in ("amd64", "arm64")
    if (codename, arch) != (release(), architecture())  # that one is test_deb_lifecycle's
]


@pytest.fixture(scope="module", params=SYSTEMS, ids=[f"{c}-{a}" for c, a in SYSTEMS])
def system(request, package_for, tmp_path_factory) -> Iterator[tuple[Container, str, str, Path]]:
    codename, arch = request.param
    deb, root = package_for(codename, arch)
    debs = tmp_path_factory.mktemp(f"debs-{codename}-{arch}")
    shutil.copy(deb, debs / "edge-gateway.deb")
    container = Container(root, tmp_path_factory.mktemp(f"machine-{codename}-{arch}"), {debs: "/mnt/debs"})
    emulated = arch != architecture()  # qemu-user is registered for it (tools/debian-root)
    try:
        container.start(timeout_s=600 if emulated else 60)
        yield container, codename, arch, deb
    finally:
        container.stop(timeout_s=10 if emulated else 60)  # emulated, its systemd never finishes a shutdown
        shutil.rmtree(debs)


def test_built_for_its_release_and_architecture(system):
    _, codename, arch, deb = system
    fields = {
        f: subprocess.run(["dpkg-deb", "-f", str(deb), f], capture_output=True, text=True, check=True).stdout.strip()
        for f in ("Architecture", "Depends")
    }
    assert fields["Architecture"] == arch
    assert re.search(rf"(^|, ){PYTHON[codename]}(,|$)", fields["Depends"]), fields["Depends"]
    # the compiled parts are for that architecture: LiteRT's interpreter and systemd-python's module
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    tag = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[arch]
    assert re.search(rf"systemd/_daemon\.cpython-3\d+-{tag}\.so", listing), "systemd-python not built for " + arch
    assert f"lib/{PYTHON[codename]}/site-packages/ai_edge_litert/" in listing


def test_installs_with_no_network_runs_under_its_unit_trains_and_scores(system, virtual_node):
    machine, codename, arch, _ = system
    assert machine.run("dpkg", "--print-architecture").stdout.strip() == arch
    installed = machine.run("dpkg", "-i", "/mnt/debs/edge-gateway.deb", network=False, timeout=1200)
    assert "Setting up edge-gateway" in installed.stdout
    link = machine.run("readlink", "-f", "/opt/edge-gateway/bin/python").stdout.strip()
    assert link == f"/usr/bin/{PYTHON[codename]}"
    emulated = arch != architecture()
    slow = 10 if emulated else 1
    if emulated:
        machine.run("mkdir", "-p", "/etc/systemd/system/gatewayd.service.d")
        machine.write("/etc/systemd/system/gatewayd.service.d/qemu-user.conf", EMULATION_DROP_IN.read_text())
        machine.run("systemctl", "daemon-reload")

    point_at(machine, virtual_node.port)
    restart = machine.run("systemctl", "restart", "gatewayd", timeout=120 * slow, check=False)
    journal = machine.run("journalctl", "-u", "gatewayd", "--no-pager", "-n", "40", check=False).stdout
    assert restart.returncode == 0, f"{restart.stderr}\n{journal}"
    wait_for(lambda: readings(machine) > 20, 60 * slow, "readings stored under the unit", machine)
    # scikit-learn in a child process, then LiteRT scoring in the daemon, both under the unit's
    # syscall filter and MemoryDenyWriteExecute
    wait_for(lambda: "models: node-1 v1" in gatewayd_status(machine), 180 * slow, "first model in service", machine)
    wait_for(lambda: scored(machine) >= 5, 60 * slow, "windows scored by the first model", machine)
    assert unit_property(machine, "gatewayd", "NRestarts") == "0"
    assert unit_property(machine, "gatewayd", "ActiveState") == "active"
    # no privileges, natively and emulated (the kernel holds them for qemu-user's process too)
    status = machine.read(f"/proc/{unit_property(machine, 'gatewayd', 'MainPID')}/status")
    assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE), status
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE), status
    if not emulated:  # the whole hardened unit: a syscall filter
        assert re.search(r"^Seccomp:\s+2$", status, re.MULTILINE), status
    else:  # the drop-in turns off the mount-namespace settings and nothing else of the unit
        assert unit_property(machine, "gatewayd", "DevicePolicy") == "closed"
        assert unit_property(machine, "gatewayd", "MemoryDenyWriteExecute") == "yes"
        families = set(unit_property(machine, "gatewayd", "RestrictAddressFamilies").split())
        assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}, families
    journal = machine.run("journalctl", "-u", "gatewayd", "--no-pager", check=False).stdout
    assert "training failed" not in journal and "Traceback" not in journal, journal[-3000:]
    assert machine.run("gatewayd", "check-config", "--config", CONFIG).returncode == 0


def scored(machine: Container) -> int:
    found = re.search(r"detection: (\d+) windows scored", gatewayd_status(machine))
    return int(found.group(1)) if found else 0
