"""The cloud agent's upload state as gatewayd reads it: which outbox rows have gone up.

`cloud-sync` keeps its cursors (per source, the last position the cloud acknowledged) in
`cloud-sync.json` in the state directory, beside the store it reads. The daemon reads them to
let the budget evict outbox rows already uploaded; `gatewayd status` and the dashboard read
them to say what is still waiting. Only cloud_sync writes the file (cloud_sync/uploader.py)."""

from __future__ import annotations

import json
from pathlib import Path

FILE_NAME = "cloud-sync.json"
# The outbox rows each upload source covers, by kind: one cursor per source.
OUTBOX_SOURCES: dict[str, tuple[str, ...]] = {"alerts": ("alert", "alert_update", "model_event"), "labels": ("label",)}


def read(state_dir: Path) -> dict | None:
    """The agent's whole state (cursors, last upload, bytes today...); None when no agent has
    run on this gateway or its file cannot be read."""
    try:
        state = json.loads((state_dir / FILE_NAME).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return state if isinstance(state, dict) else None


def outbox_cursors(state: dict | None) -> dict[str, int]:
    """The outbox sources' cursors in an agent's state: 0 for a source never uploaded, and for
    anything in the file that is not a cursor (it decides what the budget may delete)."""
    cursors = (state or {}).get("cursors")
    if not isinstance(cursors, dict):
        return dict.fromkeys(OUTBOX_SOURCES, 0)
    return {
        source: v if type(v) is int and v > 0 else 0 for source in OUTBOX_SOURCES for v in (cursors.get(source, 0),)
    }
