"""A node's config.json, checked on the host by the firmware's own validator.

`firmware/config.py` is what the node runs at boot; it also runs under CPython once
`micropython.const` is provided, so the host checks a configuration with exactly the rules
the node will apply, before any device is touched. A test runs the same files through the
MicroPython binary and checks that both verdicts agree.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_flash.errors import EdgeFlashError

# config.py and what it imports, by the top-level names the firmware uses.
_FIRMWARE_MODULES = ("micropython", "config", "config_model", "detectors", "regmap")
_lock = threading.Lock()


class NodeConfigError(EdgeFlashError, ValueError):
    """The firmware refuses this configuration; `key` is its key path, e.g.
    `channels[0].zscore.window`, and `reason` what is wrong with it."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


@contextmanager
def _firmware_config(firmware_dir: Path) -> Iterator[types.ModuleType]:
    """Import firmware/config.py under CPython without leaving its generic module names
    (config, regmap ...) behind in sys.modules."""
    with _lock:
        saved = {name: sys.modules.pop(name) for name in _FIRMWARE_MODULES if name in sys.modules}
        shim = types.ModuleType("micropython")
        shim.const = lambda value: value  # type: ignore[attr-defined]
        sys.modules["micropython"] = shim
        sys.path.insert(0, str(firmware_dir))
        try:
            yield importlib.import_module("config")
        finally:
            sys.path.remove(str(firmware_dir))
            for name in _FIRMWARE_MODULES:
                sys.modules.pop(name, None)
            sys.modules.update(saved)


def to_json(config: dict) -> str:
    return json.dumps(config, indent=1, sort_keys=True) + "\n"


def validate(config: dict, firmware_dir: Path) -> str:
    """The config.json text for `config`, once the firmware's validator accepts it."""
    text = to_json(config)
    with _firmware_config(firmware_dir) as fw:
        try:
            fw.parse(text)
        except fw.ConfigError as exc:
            key, _, reason = exc.message.partition(": ")
            raise NodeConfigError(key, reason) if reason else NodeConfigError("", exc.message) from None
    return text


def key_path(key: str) -> tuple[str | int, ...]:
    """`channels[0].zscore.window` as ('channels', 0, 'zscore', 'window')."""
    parts: list[str | int] = []
    for part in key.replace("[", ".[").split("."):
        if not part:
            continue
        parts.append(int(part[1:-1]) if part.startswith("[") and part.endswith("]") else part)
    return tuple(parts)
