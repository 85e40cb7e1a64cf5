"""A throwaway Debian machine for package tests: a minbase root of a Debian release and
architecture (this machine's, or arm64 under qemu-user-static), booted with systemd as PID 1
under systemd-nspawn, so that the package's maintainer scripts and units run as on a gateway,
and nothing of it touches the running system.

The root is made once and kept (build/ is ignored by git) while its package list is the same;
each boot runs on a copy of it, removed when the container stops, with what systemd-nspawn
leaves in /run.
The container shares the host's network, so a virtual node on 127.0.0.1 is reachable. It gets a
cgroup v2 hierarchy and the bpf() call, so that its systemd enforces DevicePolicy= with BPF
device programs as on a gateway; resource limits (MemoryMax=, TasksMax=) need cgroup controllers
that a host still using cgroup v1 for them cannot hand over, and are then not enforced."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
NSPAWN_RUN = Path("/run/systemd/nspawn")
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = Path(__file__).resolve().parents[2] / "tools"


def release() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise RuntimeError("no VERSION_CODENAME in /etc/os-release")


def architecture() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def package_and_root(codename: str, arch: str) -> tuple[Path, Path]:
    """The package of `codename` for `arch` and the minbase root of that release and
    architecture with what it depends on, made by tools/package-test-root (`make deb` and
    tools/debian-root, each a no-op when what it made is up to date)."""
    result = subprocess.run(
        [str(TOOLS / "package-test-root"), codename, arch],
        capture_output=True,
        text=True,
        env={**os.environ, "DEBIAN_MIRROR": MIRROR},
    )
    if result.returncode != 0:
        raise RuntimeError(f"the package or its root failed:\n{result.stdout[-3000:]}\n{result.stderr[-4000:]}")
    deb, root = result.stdout.split()
    return Path(deb), Path(root)


class Container:
    """`systemd-nspawn --boot` of a copy of `image`; commands enter it with nsenter."""

    def __init__(self, image: Path, workdir: Path, binds: dict[Path, str] | None = None):
        self.image = image
        self.root = workdir / "root"
        self.log = workdir / "console.log"
        self.binds = binds or {}
        self.name = f"edge-gateway-test-{os.getpid()}"
        self.process: subprocess.Popen[bytes] | None = None
        self.leader = 0  # the container's PID 1 (systemd), as the host sees it
        self.made_in_run: list[Path] = []  # what systemd-nspawn creates in /run and does not remove

    def start(self, timeout_s: float = 60.0) -> None:
        subprocess.run(["cp", "-a", "--reflink=auto", str(self.image), str(self.root)], check=True)
        self.made_in_run = [d for d in (NSPAWN_RUN, NSPAWN_RUN / "locks", NSPAWN_RUN / "propagate") if not d.exists()]
        binds = [f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--quiet",
                    "--boot",
                    f"--machine={self.name}",
                    "--register=no",
                    "--keep-unit",
                    "--console=passive",
                    "--system-call-filter=bpf",
                    f"--directory={self.root}",
                    *binds,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
            )
        deadline = time.monotonic() + timeout_s
        while not self.leader:
            assert self.process.poll() is None, f"systemd-nspawn exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the container's systemd did not start"
            self.leader = self._systemd_child()
            time.sleep(0.1)
        state = ""
        while state not in ("running", "degraded"):
            assert time.monotonic() < deadline, f"the container did not finish booting: {state}"
            state = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=30).stdout.strip()
            time.sleep(0.2)

    def _systemd_child(self) -> int:
        assert self.process is not None
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
            for pid in children:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        except OSError:
            pass
        return 0

    def command(self, *cmd: str, network: bool = True) -> list[str]:
        """A command line that runs `cmd` inside, with a clean environment; without `network`
        in a network namespace of its own that has no interface but a down loopback."""
        offline = [] if network else ["unshare", "--net", "--"]
        return ["nsenter", f"--target={self.leader}", "--all", "--", *offline, "env", "-i", PATH, *cmd]

    def run(
        self, *cmd: str, check: bool = True, network: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*cmd, network=network), capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def read(self, path: str) -> str:
        return self.run("cat", path).stdout

    def write(self, path: str, text: str) -> None:
        self.run("sh", "-c", f'cat > "{path}"', input=text)

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path, check=False).returncode == 0

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # an orderly shutdown of the container's systemd
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.leader:
            # systemd-nspawn killed before its container shut down leaves the container's PID 1
            # behind; killing it ends every process of the container
            try:
                if Path(f"/proc/{self.leader}/comm").read_text().strip() == "systemd":
                    os.kill(self.leader, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(NSPAWN_RUN / "propagate" / self.name, ignore_errors=True)
        for folder in reversed(self.made_in_run):
            try:
                folder.rmdir()
            except OSError:  # not empty: another container is using it
                pass
