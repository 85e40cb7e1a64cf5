import os
import subprocess
import sys
import time

import pytest

from gatewayd.demo.virtual_node import VirtualNode, VirtualNodeError, free_port

STARTER = (
    "import sys\n"
    "from gatewayd.demo.virtual_node import VirtualNode\n"
    "n = VirtualNode(state_dir=sys.argv[1]); n.start(); print(n.process.pid, flush=True)\n"
    "import time; time.sleep(60)\n"
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_node_dies_with_a_killed_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert alive(child)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_taken_port_is_a_clear_error():
    with VirtualNode(unit=1) as first:
        with pytest.raises(VirtualNodeError, match="did not start"):
            VirtualNode(unit=2, port=first.port).start()


def test_bad_arguments_are_reported():
    node = VirtualNode(unit=300, port=free_port())
    with pytest.raises(VirtualNodeError, match="--unit must be 1..247"):
        node.start()
    assert node.process is None and os.environ.get("EDGE_FIRMWARE_DIR") is None


def test_temporary_flash_is_removed_and_a_given_one_kept(tmp_path):
    node = VirtualNode(unit=1)
    node.start()
    flash = node.state_dir
    assert flash is not None and flash.is_dir()
    node.stop()
    assert not flash.exists()
    kept = tmp_path / "flash"
    with VirtualNode(unit=1, state_dir=kept):
        pass
    assert kept.is_dir()
    failing = VirtualNode(unit=300)
    with pytest.raises(VirtualNodeError):
        failing.start()
    assert failing.state_dir is not None and not failing.state_dir.exists()
