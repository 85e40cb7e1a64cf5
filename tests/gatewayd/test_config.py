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
