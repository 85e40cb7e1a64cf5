"""Running a snippet in the MicroPython unix port with the firmware's modules importable, as
the tests that compare the firmware with CPython code do."""

from __future__ import annotations

import subprocess

from gatewayd.demo.virtual_node import find_firmware_dir, find_micropython, micropython_env


def run_in_micropython(script: str) -> str:
    """What the script prints; a failing script fails the test with its error."""
    return subprocess.run(
        [find_micropython(), "-c", script],
        env=micropython_env(find_firmware_dir()),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
