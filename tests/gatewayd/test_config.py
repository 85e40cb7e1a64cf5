import pytest

from gatewayd.config import ConfigError, load_config, parse_config

VALID = """
[gateway]
name = "plant-7"
state_dir = "/tmp/x"

[[devices]]
name = "pump-1"
host = "10.0.0.5"
port = 502
unit = 3
interval_s = 0.5
"""


def test_valid_config_with_defaults():
    config = parse_config(VALID)
    assert config.gateway.name == "plant-7"
    assert config.devices[0].unit == 3
    assert config.devices[0].timeout_s == 1.0
    assert config.store.batch_size == 50_000


def test_unknown_key_names_file_line_and_key():
    text = VALID + 'colour = "red"\n'
    with pytest.raises(ConfigError) as err:
        parse_config(text, "site.toml")
    assert str(err.value) == f"site.toml:{len(text.splitlines())}: devices.0.colour: unknown key"


def test_bad_value_in_second_device_points_at_its_line():
    text = VALID + '\n[[devices]]\nname = "pump-2"\nhost = "h"\nport = 70000\n'
    with pytest.raises(ConfigError) as err:
        parse_config(text, "site.toml")
    line = text.splitlines().index("port = 70000") + 1
    assert str(err.value).startswith(f"site.toml:{line}: devices.1.port: Input should be less than or equal to 65535")
    assert "(got 70000)" in str(err.value)


def test_missing_key_points_at_its_table():
    text = '[[devices]]\nname = "a"\n'
    with pytest.raises(ConfigError, match=r"^c.toml:1: devices.0: a tcp device needs host$"):
        parse_config(text, "c.toml")


def test_wrong_type_is_rejected_not_coerced():
    with pytest.raises(ConfigError, match="devices.0.port"):
        parse_config(VALID.replace("port = 502", 'port = "502"'))


def test_duplicate_device_names_and_endpoints():
    dup = VALID + '\n[[devices]]\nname = "pump-1"\nhost = "other"\n'
    with pytest.raises(ConfigError, match="device name 'pump-1' is used twice"):
        parse_config(dup)
    same = VALID + '\n[[devices]]\nname = "pump-2"\nhost = "10.0.0.5"\nunit = 3\n'
    with pytest.raises(ConfigError, match="both poll 10.0.0.5:502 unit 3"):
        parse_config(same)


def test_no_devices_is_an_error():
    with pytest.raises(ConfigError, match="devices"):
        parse_config("[gateway]\nname = 'x'\n")


def test_toml_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[[devices]\n", "broken.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_queue_must_hold_a_batch():
    with pytest.raises(ConfigError, match=r"queue_readings \(5000\) must hold at least one batch \(10000\)"):
        parse_config(VALID + "\n[store]\nbatch_size = 10000\nqueue_readings = 5000\n")


RTU = """
[[buses]]
name = "line-1"
port = "/dev/ttyUSB0"

[[devices]]
name = "meter"
profile = "generic"
transport = "rtu"
bus = "line-1"
unit = 4

[[devices.registers]]
name = "power"
table = "input"
address = 10
type = "float32"
word_order = "little"
scale = 0.001
unit = "kW"
"""


def test_rtu_generic_device():
    config = parse_config(RTU)
    device = config.devices[0]
    assert device.bus == "line-1" and device.registers[0].word_order == "little"


def test_device_rules():
    with pytest.raises(ConfigError, match="uses bus 'line-2', which no"):
        parse_config(RTU.replace('bus = "line-1"', 'bus = "line-2"'))
    with pytest.raises(ConfigError, match="type 'float32' does not fit table 'coil'"):
        parse_config(RTU.replace('table = "input"', 'table = "coil"'))
    with pytest.raises(ConfigError, match="a generic device needs"):
        parse_config(RTU.split("[[devices.registers]]")[0])
    with pytest.raises(ConfigError, match="registers are for profile 'generic'"):
        parse_config(RTU.replace('profile = "generic"', 'profile = "edge-node"'))


def run_cli(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "gatewayd", *args], capture_output=True, text=True, timeout=60)


def test_a_file_that_is_not_utf8_is_one_line_naming_the_place(tmp_path):
    path = tmp_path / "site.toml"
    path.write_bytes(VALID.encode().replace(b'"plant-7"', b'"plant-\xe9"'))  # Latin-1 from an old editor
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path}:3: not UTF-8 text: byte 0xe9 at column 15 (TOML files are UTF-8; save it as UTF-8)"
    )
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2 and result.stderr == f"error: {err.value}\n" and "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ['""', '"   "'])
def test_an_empty_state_dir_is_refused(value):
    with pytest.raises(ConfigError) as err:
        parse_config(VALID.replace('"/tmp/x"', value), "site.toml")
    assert str(err.value).startswith("site.toml:4: gateway.state_dir: must name a directory")


def test_a_state_dir_that_cannot_be_written_is_one_line_from_check_config_and_run_goes_on(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    # a card the kernel remounted read-only: not even root can create the state directory there
    from tests.faults.support import need_root

    need_root()
    mount = tmp_path / "card"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mount)], check=True)
    try:
        config = tmp_path / "card.toml"
        config.write_text(VALID.replace('"/tmp/x"', f'"{mount}/state"'))
        result = run_cli("check-config", "--config", str(config))
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
    assert result.returncode == 2, result
    assert result.stderr == (
        f"error: {config}:4: gateway.state_dir: cannot create {mount}/state: cannot write to "
        f"{mount}: the file system is read-only\n"
    )
    path = tmp_path / "site.toml"
    blocked = tmp_path / "file"
    blocked.write_text("")
    path.write_text(
        VALID.replace('"/tmp/x"', f'"{blocked}/state"').replace('"10.0.0.5"', '"127.0.0.1"').replace("502", "1")
    )
    result = run_cli("check-config", "--config", str(path))
    assert (
        result.returncode == 2
        and result.stderr == f"error: {path}:4: gateway.state_dir: {blocked} is not a directory\n"
    )
    # the daemon says the same in one line and polls anyway (the store opens once it can)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatewayd", "run", "--config", str(path)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        lines: list[str] = []
        while time.monotonic() < deadline and not any("poll failed" in line for line in lines):
            lines.append(proc.stderr.readline())  # type: ignore[union-attr]
        assert proc.poll() is None, "".join(lines)
        assert any(
            f"gateway.state_dir: {blocked} is not a directory; running without a store" in line for line in lines
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in "".join(lines) + rest, rest
    assert os.path.isfile(blocked)


SECRETS = {  # key -> (its section's TOML, needs a long token)
    "cloud.token_file": ('[cloud]\nurl = "https://cloud.example"\ntoken_file = "{f}"\n', False),
    "dashboard.token_file": ('[dashboard]\ntoken_file = "{f}"\n', True),
    "mqtt.password_file": ('[mqtt]\nhost = "broker"\nusername = "gw"\npassword_file = "{f}"\n', False),
    "mqtt.command_secret_file": ('[mqtt]\nhost = "broker"\ncommand_secret_file = "{f}"\n', True),
}


@pytest.mark.parametrize("key", sorted(SECRETS))
def test_every_secret_file_is_checked_the_same_way(tmp_path, key):
    """Missing, world-readable, too short: each is one line naming the file, its line and key."""
    section, needs_length = SECRETS[key]
    secret = tmp_path / "secret"
    config = tmp_path / "gatewayd.toml"
    config.write_text(VALID + "\n" + section.format(f=secret))
    line = len((VALID + "\n" + section).splitlines())  # the file's key is its section's last line
    with pytest.raises(ConfigError, match=rf"gatewayd.toml:{line}: {key}: cannot read {secret}: No such file"):
        load_config(config)
    secret.write_text("a" * 40)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=rf"{key}: {secret} is world-readable; chmod o-r it"):
        load_config(config)
    secret.chmod(0o600)
    load_config(config)
    if needs_length:
        secret.write_text("short")
        with pytest.raises(ConfigError, match=rf"{key}: {secret} holds 5 characters, at least 16 are needed"):
            load_config(config)
