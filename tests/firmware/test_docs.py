"""The example configuration in firmware/README.md is a valid node configuration."""

import json
import re
import subprocess

from gatewayd.demo.virtual_node import find_firmware_dir, find_micropython, micropython_env


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
    out = subprocess.run(
        [find_micropython(), "-c", script],
        env=micropython_env(find_firmware_dir()),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["3", "1", "10", "20", "1", "4", "adc"]
