"""The Debian package's life on a gateway, in order: installed with no network, checked (files,
user, permissions, units), run by hand as its user and then by systemd under the hardened units
against a virtual node, cloud-sync uploading from the store, the faults the unit must outlive (a
full disk, a daemon killed again and again) and the one it must not retry (an invalid
configuration), upgraded, removed and purged.

The gateway is a throwaway Debian root booted with systemd as PID 1 (nspawn.py); the tests run
in file order and each step starts from where the one before left the machine."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_sync.server import BackgroundEndpoint
from tests.packaging.conftest import BuiltPackage
from tests.packaging.nspawn import Container

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CONFIG = "/etc/gatewayd/gatewayd.toml"
STATE = "/var/lib/gatewayd"
RUNTIME = "/run/gatewayd"
UNITS = {"gatewayd": "/lib/systemd/system/gatewayd.service", "cloud-sync": "/lib/systemd/system/cloud-sync.service"}
AS_GATEWAYD = ("setpriv", "--reuid=gatewayd", "--regid=gatewayd", "--init-groups")
# Short windows and a half-minute bootstrap, so the gateway trains its first model within the test.
DETECTION = '\n[detection]\nwindow_s = 2.0\nhop_s = 0.5\nbootstrap_minutes = 0.5\ntrees = 20\nstats = ["mean", "std"]\n'
UPGRADE_VERSION = "+upgrade1"


@pytest.fixture(scope="module")
def debs(package: BuiltPackage, tmp_path_factory) -> Iterator[Path]:
    """The package, and a copy with a higher version for the upgrade."""
    folder = tmp_path_factory.mktemp("debs")
    shutil.copy(package.path, folder / "edge-gateway.deb")
    tree = folder / "tree"
    subprocess.run(["dpkg-deb", "-R", str(package.path), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    control.write_text(re.sub(r"^Version: (.+)$", rf"Version: \1{UPGRADE_VERSION}", control.read_text(), flags=re.M))
    # zstd at level 1: fast, and the container's dpkg reads it
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zzstd", "-z1", "-b", str(tree), str(folder / "newer.deb")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(tree)
    yield folder
    shutil.rmtree(folder)  # 200 MB


@pytest.fixture(scope="module")
def machine(package: BuiltPackage, debs: Path, tmp_path_factory) -> Iterator[Container]:
    container = Container(package.root, tmp_path_factory.mktemp("machine"), {debs: "/mnt/debs"})
    try:
        container.start()
        yield container
    finally:
        container.stop()


def gatewayd_status(machine: Container) -> str:
    return machine.run(*AS_GATEWAYD, "gatewayd", "status", "--config", CONFIG, check=False).stdout


def readings(machine: Container) -> int:
    found = re.search(r"^node-1: (\d+) readings", gatewayd_status(machine), re.M)
    return int(found.group(1)) if found else 0


def wait_for(predicate, timeout_s: float, what: str, machine: Container) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            journal = machine.run("journalctl", "--no-pager", "-n", "60", check=False).stdout
            raise AssertionError(f"{what}: not within {timeout_s:g} s\n{journal}")
        time.sleep(1.0)


def point_at(machine: Container, port: int) -> None:
    """Edit the installed configuration as an operator would: the device is the virtual node."""
    text = machine.read(CONFIG)
    text = re.sub(r'^host = ".*"$', 'host = "127.0.0.1"', text, flags=re.M)
    text = re.sub(r"^port = \d+$", f"port = {port}", text, flags=re.M)
    text = re.sub(r"^interval_s = .*$", "interval_s = 0.1", text, flags=re.M)
    machine.write(CONFIG, text if "[detection]" in text else text + DETECTION)


def unit_property(machine: Container, unit: str, name: str) -> str:
    return machine.run("systemctl", "show", "--value", "-p", name, unit).stdout.strip()


def unit_state(machine: Container, unit: str = "gatewayd") -> dict[str, str]:
    shown = machine.run(
        "systemctl", "show", "-p", "ActiveState,SubState,NRestarts,StatusText,MainPID,Result,ExecMainStatus", unit
    ).stdout
    return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)


def polls(machine: Container) -> int:
    """Polls of node-1 so far, from the running daemon's status (runtime_dir, not the store)."""
    found = re.search(r"^  node-1: \w+, (\d+) polls", gatewayd_status(machine), re.M)
    return int(found.group(1)) if found else 0


def test_installs_with_no_network_and_starts_its_services(machine):
    installed = machine.run("dpkg", "-i", "/mnt/debs/edge-gateway.deb", network=False, timeout=600)
    assert "Setting up edge-gateway" in installed.stdout
    # enabled, and started by the package; gatewayd's readiness is its own READY=1 (Type=notify)
    for unit in UNITS:
        assert machine.exists(f"/etc/systemd/system/multi-user.target.wants/{unit}.service")
    wait_for(lambda: unit_property(machine, "gatewayd", "ActiveState") == "active", 60, "gatewayd active", machine)
    # with no [cloud] section cloud-sync has nothing to do: skipped, not failed
    assert unit_property(machine, "cloud-sync", "Result") == "exec-condition"
    assert machine.run("systemctl", "is-failed", "cloud-sync", check=False).returncode != 0


def test_files_user_and_permissions(machine):
    assert machine.run("readlink", "-f", "/usr/bin/gatewayd").stdout.strip() == "/opt/edge-gateway/bin/gatewayd"
    assert "/etc/gatewayd/gatewayd.toml" in machine.run("dpkg-query", "-W", "-f=${Conffiles}", "edge-gateway").stdout
    assert machine.run("gatewayd", "check-config", "--config", CONFIG).returncode == 0
    for unit in UNITS.values():  # the units' Documentation=
        assert "file:///usr/share/doc/edge-gateway/install.md" in machine.read(unit)
    assert machine.exists("/usr/share/doc/edge-gateway/install.md")
    assert machine.exists("/usr/share/doc/edge-gateway/examples/gatewayd.toml")
    # the environment runs on the system's python3.11, not on anything of the build machine
    assert machine.run("readlink", "-f", "/opt/edge-gateway/bin/python").stdout.strip() == "/usr/bin/python3.11"
    assert "/build/" not in machine.read("/opt/edge-gateway/bin/gatewayd").splitlines()[0]

    user = machine.run("getent", "passwd", "gatewayd").stdout.strip().split(":")
    assert int(user[2]) < 1000 and user[5] == STATE and user[6] == "/usr/sbin/nologin", user
    assert "dialout" in machine.run("id", "-nG", "gatewayd").stdout.split()
    assert machine.run("stat", "-c", "%U:%G %a", STATE).stdout.strip() == "gatewayd:gatewayd 750"
    assert machine.run("stat", "-c", "%U:%G %a", RUNTIME).stdout.strip() == "gatewayd:gatewayd 750"
    assert machine.run("stat", "-c", "%U:%G %a", CONFIG).stdout.strip() == "root:root 644"
    # the package's own files belong to root and nobody else may write them
    writable = machine.run(
        "find", "/opt/edge-gateway", "(", "-perm", "-o+w", "-o", "-not", "-user", "root", ")", "-not", "-type", "l"
    ).stdout
    assert writable == "", writable


def test_units_verify_clean_and_score_at_most_2(machine):
    verify = machine.run("systemd-analyze", "verify", *UNITS.values(), check=False)
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stdout + verify.stderr
    for unit, path in UNITS.items():
        report = machine.run("systemd-analyze", "security", "--offline=true", "--no-pager", path, check=False).stdout
        score = re.search(r"Overall exposure level for \S+: ([\d.]+)", report)
        assert score, report
        assert float(score.group(1)) <= 2.0, f"{unit}: {score.group(1)}\n{report}"


def test_runs_by_hand_as_its_user_with_the_installed_config(machine, virtual_node):
    machine.run("systemctl", "stop", "gatewayd")
    # The runtime directory outlives the stop (RuntimeDirectoryPreserve=), so `gatewayd status` can
    # say since when. (Here it says "not running since the last boot": under ProtectProc= and
    # ProtectKernelTunables= the unit sees the host's boot id, not the one systemd-nspawn gives
    # the container.)
    assert json.loads(machine.read(f"{RUNTIME}/status.json"))["stopped"] is True
    point_at(machine, virtual_node.port)
    daemon = subprocess.Popen(
        machine.command(*AS_GATEWAYD, "gatewayd", "run", "--config", CONFIG),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        before = readings(machine)
        wait_for(lambda: readings(machine) > before + 20, 60, "readings stored by hand", machine)
    finally:
        # nsenter forks into the container's PID namespace; its child is the daemon
        child = Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children").read_text().split()
        for pid in child:
            subprocess.run(["kill", "-TERM", pid], check=False)
        _, stderr = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, stderr
    assert "gatewayd stopped" in stderr


def test_runs_under_its_unit_and_trains_its_first_model(machine, virtual_node):
    point_at(machine, virtual_node.port)
    machine.run("systemctl", "restart", "gatewayd")
    before = readings(machine)
    wait_for(lambda: readings(machine) > before + 20, 60, "readings stored under the unit", machine)
    # Local training runs scikit-learn in a child process, and scoring loads LiteRT: both under
    # the unit's syscall filter and MemoryDenyWriteExecute. A model in service proves they work.
    wait_for(lambda: "models: node-1 v1" in gatewayd_status(machine), 180, "first model trained and loaded", machine)
    assert machine.exists(f"{STATE}/models/node-1/current/manifest.json")
    # the status is on tmpfs, away from the store's disk
    assert machine.exists(f"{RUNTIME}/status.json") and not machine.exists(f"{STATE}/status.json")
    # The watchdog (30 s) was fed all along: no restart.
    assert unit_property(machine, "gatewayd", "NRestarts") == "0"
    assert unit_property(machine, "gatewayd", "ActiveState") == "active"

    # What systemd applied to the running daemon, not only what the unit says.
    pid = unit_property(machine, "gatewayd", "MainPID")
    status = machine.read(f"/proc/{pid}/status")
    assert re.search(r"^Seccomp:\s+2$", status, re.M) and re.search(r"^NoNewPrivs:\s+1$", status, re.M), status
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    mounts = {line.split()[4]: line.split()[5] for line in machine.read(f"/proc/{pid}/mountinfo").splitlines()}
    assert mounts["/"].startswith("ro") and mounts[STATE].startswith("rw"), mounts
    # The peak of the daemon itself stays well inside MemoryMax= (training runs beside it).
    peak_kb = int(re.search(r"^VmHWM:\s+(\d+) kB$", status, re.M).group(1))
    assert peak_kb * 1024 < int(unit_property(machine, "gatewayd", "MemoryMax")) / 2, peak_kb

    # Device access is closed but for the serial lines: a process in the unit's cgroup may open
    # /dev/null but not /dev/net/tun, which a process outside it can.
    def open_tun(inside_unit: bool) -> subprocess.CompletedProcess[str]:
        join = "echo $$ > /sys/fs/cgroup/system.slice/gatewayd.service/cgroup.procs && " if inside_unit else ""
        return machine.run("sh", "-c", f"{join}exec 3<>/dev/null 4<>/dev/net/tun", check=False)

    assert open_tun(inside_unit=False).returncode == 0
    denied = open_tun(inside_unit=True)
    assert denied.returncode != 0 and "Operation not permitted" in denied.stderr and "null" not in denied.stderr, denied
    journal = machine.run("journalctl", "-u", "gatewayd", "--no-pager", check=False).stdout
    assert "training failed" not in journal and "Traceback" not in journal, journal


def test_cloud_sync_uploads_from_the_store_under_its_unit(machine, tmp_path):
    # the container shares the host's network: it reaches the endpoint on 127.0.0.1
    endpoint = BackgroundEndpoint(tmp_path / "cloud")
    try:
        machine.write("/etc/gatewayd/cloud-token", endpoint.tokens.issue("gateway") + "\n")
        machine.run("chgrp", "gatewayd", "/etc/gatewayd/cloud-token")
        machine.run("chmod", "0640", "/etc/gatewayd/cloud-token")
        config = machine.read(CONFIG)
        machine.write(
            CONFIG,
            config + f'\n[cloud]\nurl = "{endpoint.url}"\ntoken_file = "/etc/gatewayd/cloud-token"\ninterval_s = 1.0\n',
        )
        machine.run("systemctl", "restart", "cloud-sync")
        wait_for(lambda: endpoint.storage.usage("gateway")["batches"] >= 1, 60, "an upload from cloud-sync", machine)
        # device health comes from gatewayd's status in /run/gatewayd, which its unit can read
        wait_for(
            lambda: any("node-1" in r["payload"]["devices"] for r in endpoint.storage.records("gateway", "health")),
            60,
            "device health uploaded by cloud-sync",
            machine,
        )
        assert unit_property(machine, "cloud-sync", "ActiveState") == "active"
        # its cursors are its own file in the shared state directory; the store is read-only to it
        assert machine.run("stat", "-c", "%U", f"{STATE}/cloud-sync.json").stdout.strip() == "gatewayd"
        pid = unit_property(machine, "cloud-sync", "MainPID")
        mounts = {line.split()[4]: line.split()[5] for line in machine.read(f"/proc/{pid}/mountinfo").splitlines()}
        assert mounts[f"{STATE}/gatewayd.sqlite3"].startswith("ro"), mounts
        assert mounts[STATE].startswith("rw"), mounts
    finally:
        machine.run("systemctl", "stop", "cloud-sync", check=False)
        endpoint.stop()


def test_a_full_disk_leaves_the_unit_running_and_it_stores_again_once_space_is_freed(machine, virtual_node):
    """The state directory on a small file system of its own (a 16 MB tmpfs: safe for the host's
    disk), filled by another writer: the unit stays active without a restart, says the disk is
    full in its status, polling goes on, and once space is freed it stores again by itself."""
    machine.run("systemctl", "stop", "gatewayd")
    point_at(machine, virtual_node.port)
    uid, gid = (machine.run("id", flag, "gatewayd").stdout.strip() for flag in ("-u", "-g"))
    machine.run("mount", "-t", "tmpfs", "-o", f"size=16m,mode=0750,uid={uid},gid={gid}", "small-disk", STATE)
    try:
        machine.run("systemctl", "start", "gatewayd")
        restarts = unit_state(machine)["NRestarts"]
        wait_for(lambda: readings(machine) > 50, 60, "readings stored on the small disk", machine)
        # another program's log gone wild takes every free byte
        machine.run("sh", "-c", f"cat /dev/zero > {STATE}/runaway.log", check=False)
        wait_for(
            lambda: unit_state(machine)["StatusText"].startswith("STORE DISK FULL"),
            60,
            "the unit's status to say the disk is full",
            machine,
        )
        assert "store: DEGRADED (disk full)" in gatewayd_status(machine), gatewayd_status(machine)
        before = polls(machine)
        wait_for(lambda: polls(machine) > before + 50, 30, "polling to go on with the disk full", machine)
        state = unit_state(machine)
        assert (state["ActiveState"], state["SubState"], state["NRestarts"]) == ("active", "running", restarts), state

        machine.run("rm", f"{STATE}/runaway.log")
        wait_for(
            lambda: not unit_state(machine)["StatusText"].startswith("STORE"),
            60,
            "the unit's status to say the store is well again",
            machine,
        )
        before = readings(machine)
        wait_for(lambda: readings(machine) > before + 50, 60, "readings stored again", machine)
        assert "store: ok" in gatewayd_status(machine), gatewayd_status(machine)
        state = unit_state(machine)
        assert (state["ActiveState"], state["NRestarts"]) == ("active", restarts), state
        journal = machine.run("journalctl", "-u", "gatewayd", "--no-pager", check=False).stdout
        assert "is full" in journal and "Traceback" not in journal, journal[-3000:]
    finally:
        machine.run("systemctl", "stop", "gatewayd", check=False)
        machine.run("umount", STATE, check=False)
        machine.run("systemctl", "start", "gatewayd", check=False)


def test_killed_again_and_again_it_is_restarted_every_time(machine, virtual_node):
    """kill -9 twelve times in a row, each time as soon as the new daemon is there: more starts
    than a start rate limit of ten in five minutes allows, and still it comes back."""
    point_at(machine, virtual_node.port)
    machine.run("systemctl", "restart", "gatewayd")
    restarts = int(unit_state(machine)["NRestarts"])
    killed = "0"
    for _ in range(12):
        deadline = time.monotonic() + 30
        while (pid := unit_state(machine)["MainPID"]) in ("0", killed):
            assert time.monotonic() < deadline, f"not started again after {killed}: {unit_state(machine)}"
            time.sleep(0.1)
        machine.run("kill", "-KILL", pid)
        killed = pid
    wait_for(lambda: unit_state(machine)["ActiveState"] == "active", 60, "gatewayd active after 12 kills", machine)
    assert int(unit_state(machine)["NRestarts"]) == restarts + 12, unit_state(machine)
    before = readings(machine)
    wait_for(lambda: readings(machine) > before + 20, 60, "readings stored after 12 kills", machine)


def test_an_invalid_configuration_is_left_for_a_person(machine):
    """Exit 2 of `gatewayd run` itself (there is no check-config before it): failed, and not
    restarted; the journal names the file, line and key."""
    good = machine.read(CONFIG)
    machine.write(CONFIG, good.replace('log_level = "info"', 'log_level = "loud"'))
    try:
        assert machine.run("systemctl", "restart", "gatewayd", check=False).returncode != 0
        restarts = unit_state(machine)["NRestarts"]
        time.sleep(7)  # longer than RestartSec=
        state = unit_state(machine)
        assert (state["ActiveState"], state["Result"], state["ExecMainStatus"], state["NRestarts"]) == (
            "failed",
            "exit-code",
            "2",
            restarts,
        ), state
        journal = machine.run("journalctl", "-u", "gatewayd", "-n", "20", "--no-pager", check=False).stdout
        assert re.search(r"gatewayd\.toml:\d+: gateway\.log_level", journal), journal
    finally:
        machine.write(CONFIG, good)
        machine.run("systemctl", "restart", "gatewayd")


def test_upgrade_keeps_config_and_data(machine):
    config = machine.read(CONFIG)
    before = readings(machine)
    upgraded = machine.run("dpkg", "-i", "/mnt/debs/newer.deb", network=False, timeout=600)
    assert "Setting up edge-gateway" in upgraded.stdout
    version = machine.run("dpkg-query", "-W", "-f=${Version}", "edge-gateway").stdout
    assert version.endswith(UPGRADE_VERSION)
    assert machine.read(CONFIG) == config  # the edited conffile, kept without a question
    assert readings(machine) >= before
    assert machine.exists(f"{STATE}/models/node-1/current/manifest.json")
    wait_for(
        lambda: unit_property(machine, "gatewayd", "ActiveState") == "active", 60, "gatewayd after upgrade", machine
    )


def test_remove_keeps_data_and_config(machine):
    machine.run("dpkg", "--remove", "edge-gateway", network=False)
    assert unit_property(machine, "gatewayd", "ActiveState") == "inactive"
    assert not machine.exists("/opt/edge-gateway") and not machine.exists("/usr/bin/gatewayd")
    assert machine.exists(f"{STATE}/gatewayd.sqlite3") and machine.exists(CONFIG)
    assert machine.run("getent", "passwd", "gatewayd", check=False).returncode == 0


def test_purge_removes_data_and_user(machine):
    machine.run("dpkg", "--purge", "edge-gateway", network=False)
    assert not machine.exists(STATE) and not machine.exists(CONFIG) and not machine.exists(RUNTIME)
    assert machine.run("getent", "passwd", "gatewayd", check=False).returncode != 0
    assert machine.run("getent", "group", "gatewayd", check=False).returncode != 0
    assert not machine.exists("/etc/systemd/system/multi-user.target.wants/gatewayd.service")
    assert "edge-gateway" not in machine.run("dpkg-query", "-W", "-f=${Package}\\n", check=False).stdout.split()
    # the token the operator put in /etc/gatewayd is theirs (docs/install.md)
    assert machine.exists("/etc/gatewayd/cloud-token")
