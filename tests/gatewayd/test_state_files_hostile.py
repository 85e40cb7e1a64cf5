"""The small JSON files the daemon reads beside its store (the cloud agent's cursors, the
baselines, the status) may be left truncated, hand-edited or garbled: none of them can raise,
and none can widen what the disk budget deletes."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd import daemon_status
from gatewayd.detection.baseline import Baseline
from gatewayd.detection.baseline_file import FILE_NAME as BASELINES_FILE
from gatewayd.detection.baseline_file import BaselineFile
from gatewayd.store import upload_state

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
shaped = st.fixed_dictionaries({"cursors": json_values, "pump-1": json_values}) | json_values
texts = shaped.map(json.dumps) | st.text(max_size=64) | st.sampled_from(["[" * 50_000, '{"cursors": ' * 50_000, ""])


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_hostile_state_files_read_as_nothing_or_as_valid_values(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("state")
    for name in (upload_state.FILE_NAME, BASELINES_FILE, "status.json"):
        (folder / name).write_text(text)
    cursors = upload_state.outbox_cursors(upload_state.read(folder))
    assert set(cursors) == set(upload_state.OUTBOX_SOURCES)
    assert all(type(v) is int and v >= 0 for v in cursors.values())
    baselines = BaselineFile(folder / BASELINES_FILE)
    baselines.load()
    b = Baseline(np.zeros(2), 30, 10.0, 5.0)
    if baselines.restore("pump-1", "pump-1 v1", b):
        assert np.all(np.isfinite(b.level)) and b.level.shape == (2,)
    else:
        assert np.all(b.level == 0.0)
    assert daemon_status.read(folder / "status.json") is None or text.lstrip().startswith("{")


def test_cursors_that_are_not_whole_positive_numbers_delete_nothing():
    for cursors in ({"alerts": True}, {"alerts": 1e18}, {"alerts": "999"}, {"alerts": -5}, [1, 2], "x", None):
        assert upload_state.outbox_cursors({"cursors": cursors}) == {"alerts": 0, "labels": 0}
