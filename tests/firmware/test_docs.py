"""The example configuration in firmware/README.md is a valid node configuration."""

import json
import re

from gatewayd.demo.virtual_node import find_firmware_dir
from tests.micropython import run_in_micropython


def test_readme_example_config_validates_on_the_node():
    readme = (find_firmware_dir() / "README.md").read_text()
    block = re.search(r"## Configuration \(`/config.json`\)\n\n```json\n(.*?)```", readme, re.S)
    assert block, "README lost its example configuration"
    example = json.loads(block.group(1))
    script = (
        "import config\n"
        f"cfg = config.parse({json.dumps(json.dumps(example))})\n"
        "ch = cfg.channels[0]\n"
        "print(cfg.node_id, len(cfg.channels), ch.k, ch.rate_horizon, ch.trips, cfg.rtu['de'], ch.source.kind)\n"
    )
    out = run_in_micropython(script).split()
    assert out == ["3", "1", "10", "20", "1", "4", "adc"]
