"""The example configuration validates, and documents every key the configuration has."""

import tomllib
from pathlib import Path

from gatewayd.config import Config, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gatewayd.toml"


def test_example_config_is_valid():
    config = load_config(EXAMPLE)
    assert config.mqtt is not None and len(config.devices) == 3 and config.buses[0].name == "line-1"


def test_example_mentions_every_key():
    text = EXAMPLE.read_text()
    tomllib.loads(text)
    sections = {name: Config.model_fields[name] for name in ("gateway", "store", "detection")}
    assert "[[detection.segments]]" in text
    for name, field in sections.items():
        fields = field.annotation.model_fields
        replaced = {k for k, f in fields.items() if (f.description or "").startswith("Replaced by")}
        for key in set(fields) - {"segments"} - replaced:
            assert f"\n{key} = " in text, f"[{name}] {key} is not in the example"
        for key in replaced:  # kept so that old files load, never suggested
            assert f"\n{key} = " not in text, f"[{name}] {key} is replaced; the example must not set it"
    from gatewayd.config import BusSection, CloudSection, DashboardSection, DeviceSection, MqttSection, RegisterSection

    for model in (MqttSection, DeviceSection, BusSection, RegisterSection, CloudSection, DashboardSection):
        for key in set(model.model_fields) - {"registers", "segments"}:
            assert f"\n{key} = " in text or f"\n# {key} = " in text, f"{model.__name__}.{key} is not in the example"
