"""A state directory the user cannot use (the README's /var/lib/gatewayd without root, a
folder of another user): every command that opens it says so in one line naming the folder and
the reason, never with a traceback. The commands run as root without the capabilities that
override file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), on folders of another user:
the same permission checks as for any user, wherever the checkout lies (an unprivileged user
cannot reach the interpreter of a checkout in a private folder)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gatewayd.store.database import Store

REPO = Path(__file__).resolve().parents[3]
WITHOUT_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
UID = 0  # root, but bound by the permission bits like anyone else
OTHER_USER = 65534  # nobody: owns the folders the commands may not use

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to become another user"
)


@pytest.fixture
def site():
    """A folder anyone may enter (pytest's tmp_path is root's only), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="gatewayd-access-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def config_for(site: Path, state_dir: Path) -> Path:
    path = site / "gatewayd.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{state_dir}"\n\n[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = 1\n'
    )
    path.chmod(0o644)
    return path


def as_a_user(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*WITHOUT_DAC, sys.executable, "-m", "gatewayd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def someone_elses_store(folder: Path, mode: int) -> None:
    Store(folder / "gatewayd.sqlite3").close()
    for path in (folder, *folder.iterdir()):
        os.chown(path, OTHER_USER, OTHER_USER)
    folder.chmod(mode)


def someone_elses_folder(folder: Path) -> None:
    folder.mkdir()
    os.chown(folder, OTHER_USER, OTHER_USER)


def test_a_state_dir_that_cannot_be_created(site):
    parent = site / "lib"  # as /var/lib: not this user's
    someone_elses_folder(parent)
    config = config_for(site, parent / "gatewayd")
    result = as_a_user("check-config", "--config", str(config))
    assert result.returncode == 2 and result.stderr == (
        f"error: {config}:2: gateway.state_dir: cannot create {parent / 'gatewayd'}: cannot write to {parent}: "
        f"no write permission for this user (uid {UID})\n"
    )
    for command in (["status"], ["export"], ["alert", "list"]):  # reading finds nothing to read
        result = as_a_user(*command, "--config", str(config))
        assert result.returncode == 1 and result.stderr == (
            f"error: no store at {parent / 'gatewayd' / 'gatewayd.sqlite3'} (has gatewayd run with this configuration?)\n"
        ), (command, result)
    result = as_a_user("alert", "ack", "x", "--config", str(config))
    assert result.returncode == 2 and result.stderr == (
        f"error: cannot write to the state directory {parent / 'gatewayd'}: cannot create it in {parent}: "
        f"no write permission for this user (uid {UID})\n"
    )


@pytest.mark.parametrize(
    "command",
    [["status"], ["export"], ["alert", "list"], ["alert", "ack", "x"], ["model", "list"], ["model", "rollback", "p"]],
)
def test_a_state_dir_this_user_may_not_read(site, command):
    state = site / "state"
    state.mkdir()
    someone_elses_store(state, 0o700)
    config = config_for(site, state)
    result = as_a_user(*command, "--config", str(config))
    what = "the models folder" if command[0] == "model" else "the state directory"
    folder = state / "models" if command[0] == "model" else state
    reason = (
        f"permission denied for this user (uid {UID}) on a folder above it"
        if command[0] == "model"
        else f"no read permission for this user (uid {UID})"
    )
    verb = "read" if command[-1] in ("status", "export", "list") else "write to"
    assert result.returncode == 2, result
    assert result.stderr == f"error: cannot {verb} {what} {folder}: {reason}\n"


def test_a_state_dir_this_user_may_read_but_not_write(site):
    state = site / "state"
    state.mkdir()
    someone_elses_store(state, 0o755)
    config = config_for(site, state)
    result = as_a_user("alert", "label", "x", "true", "--config", str(config))
    assert result.returncode == 2 and result.stderr == (
        f"error: cannot write to the state directory {state}: no write permission for this user (uid {UID})\n"
    )


def test_the_daemon_says_it_in_one_line_and_polls_on(site):
    """`gatewayd run` keeps polling (its store opens once the folder can be written), as for any
    state directory it cannot use yet; what it must never do is die with a traceback."""
    parent = site / "lib"
    someone_elses_folder(parent)
    config = config_for(site, parent / "gatewayd")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [*WITHOUT_DAC, sys.executable, "-m", "gatewayd", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        lines: list[str] = []
        while time.monotonic() < deadline and not any("poll failed" in line for line in lines):
            lines.append(proc.stderr.readline())  # type: ignore[union-attr]
        assert proc.poll() is None, "".join(lines)
        expected = (
            f"gateway.state_dir: cannot create {parent / 'gatewayd'}: cannot write to {parent}: "
            f"no write permission for this user (uid {UID}); running without a store"
        )
        assert any(expected in line for line in lines), "".join(lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in "".join(lines) + rest, rest
