"""Each device's baseline (baseline.py) across restarts: one small JSON file in the state
directory, written at most every SAVE_EVERY_S while windows are scored and once at stop, read
at start. Without it a restart would compare a device with its training state again, and a
device that has moved on normally since would alarm until its next model.

A saved baseline belongs to the bundle it was followed under: another bundle (or another
feature count) starts from its own training mean. A file that cannot be read or written
costs only that: the daemon logs it once and goes on."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path

from .baseline import Baseline

log = logging.getLogger("gatewayd.detection")
FILE_NAME = "baselines.json"
SAVE_EVERY_S = 60.0


class BaselineFile:
    def __init__(self, path: Path):
        self.path = path
        self.saved: dict[str, dict] = {}  # device -> {"bundle": "pump-1 v3", "level": [...]}, read at start
        self.next_save = 0.0
        self.failing = False

    def load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("baselines not restored from %s (%s): devices start from their training state", self.path, exc)
            return
        if isinstance(raw, dict):
            self.saved = {
                d: e
                for d, e in raw.items()
                if isinstance(e, dict) and isinstance(e.get("bundle"), str) and isinstance(e.get("level"), list)
            }

    def restore(self, device: str, bundle: str, baseline: Baseline) -> bool:
        """Give `baseline` the level saved for this device under this bundle, if there is one."""
        entry = self.saved.pop(device, None)
        if entry is None or entry["bundle"] != bundle or len(entry["level"]) != len(baseline.level):
            return False
        if not all(type(v) in (int, float) and math.isfinite(v) for v in entry["level"]):
            return False
        baseline.level[:] = entry["level"]
        return True

    def due(self, now: float) -> bool:
        """Whether a periodic write is due; if so, the next one is SAVE_EVERY_S after `now`."""
        if now < self.next_save:
            return False
        self.next_save = now + SAVE_EVERY_S
        return True

    @staticmethod
    def snapshot(baselines: dict[str, tuple[str, Baseline]]) -> dict[str, dict]:
        """What to write of these baselines (device -> (bundle, baseline)): the following ones,
        copied, so that the file can be written off the event loop while they move on."""
        return {
            d: {"bundle": bundle, "level": [float(v) for v in b.level]}
            for d, (bundle, b) in baselines.items()
            if b.rate
        }

    def save(self, data: dict[str, dict]) -> None:
        """Write a snapshot (replacing the file whole)."""
        if not data:
            return
        temp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            temp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(temp, self.path)
        except OSError as exc:
            if not self.failing:
                log.warning(
                    "baselines not saved to %s (%s): a restart starts from the training state until it can",
                    self.path,
                    exc.strerror or exc,
                )
            self.failing = True
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            return
        if self.failing:
            log.info("baselines saved to %s again", self.path)
        self.failing = False
