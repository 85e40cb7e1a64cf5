"""`gatewayd demo` tells one run's story: each run starts from fresh state in its own folder (or
says plainly that it carries on with --keep), never clears a folder it did not make, and its
summary tells models trained in the run from models loaded from an earlier one."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.alerts.alert import Alert
from gatewayd.cli.main import build_parser
from gatewayd.demo.runner import (
    DEMO_CONFIG,
    MARKER,
    DemoStateError,
    demo_config,
    is_demo_folder,
    models_line,
    prepare_state_dir,
)
from gatewayd.store.database import Store

GATEWAYD = [sys.executable, "-m", "gatewayd"]
REPO = Path(__file__).resolve().parents[3]


def earlier_demo(folder: Path, *, marker: bool = True) -> None:
    """What a demo run leaves behind: store, models, keys, the nodes' flash, its configuration."""
    (folder / "models" / "pump-1" / "1").mkdir(parents=True)
    (folder / "nodes" / "pump-3").mkdir(parents=True)
    (folder / "nodes" / "pump-3" / "trip.json").write_text('{"latched": 1, "cause": 771, "trips": 1}')
    (folder / "keys").mkdir()
    (folder / "gatewayd.sqlite3").write_bytes(b"old store")
    (folder / "gatewayd.sqlite3-wal").write_bytes(b"old wal")
    (folder / "demo-gatewayd.toml").write_text(demo_config(folder, [5020], 0.5, folder / "demo-gatewayd.toml"))
    if marker:
        (folder / MARKER).write_text("")


def test_a_new_folder_is_made_and_marked_as_the_demos(tmp_path):
    state = tmp_path / "var"
    assert prepare_state_dir(state) == f"state: {state} (new)"
    assert [p.name for p in state.iterdir()] == [MARKER] and is_demo_folder(state)


def test_an_earlier_runs_state_is_cleared(tmp_path):
    state = tmp_path / "var"
    state.mkdir()
    earlier_demo(state)
    said = prepare_state_dir(state)
    assert said.startswith(f"state: {state} (cleared") and "--keep keeps them" in said
    assert [p.name for p in state.iterdir()] == [MARKER]


def test_a_demo_folder_from_before_the_marker_is_recognised_by_its_files(tmp_path):
    state = tmp_path / "var"
    state.mkdir()
    earlier_demo(state, marker=False)
    assert is_demo_folder(state)
    prepare_state_dir(state)
    assert [p.name for p in state.iterdir()] == [MARKER]


@pytest.mark.parametrize("keep", [False, True])
def test_a_folder_the_demo_did_not_make_is_refused_and_left_alone(tmp_path, keep):
    own = tmp_path / "site"
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    (own / "gatewayd.sqlite3").write_bytes(b"a real gateway's store")
    with pytest.raises(DemoStateError, match="did not write"):
        prepare_state_dir(own, keep=keep)
    assert sorted(p.name for p in own.iterdir()) == ["gatewayd.sqlite3", "notes.txt"]
    # a demo's configuration beside a file of someone else's does not make it the demo's
    earlier_demo(own, marker=False)
    assert not is_demo_folder(own)
    with pytest.raises(DemoStateError):
        prepare_state_dir(own, keep=keep)
    assert (own / "notes.txt").read_text() == "mine"


def test_a_file_is_not_a_state_folder(tmp_path):
    (tmp_path / "var").write_text("")
    with pytest.raises(DemoStateError, match="not a folder"):
        prepare_state_dir(tmp_path / "var")


def test_the_working_directory_is_never_cleared(tmp_path, monkeypatch):
    earlier_demo(tmp_path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    with pytest.raises(DemoStateError, match="working directory"):
        prepare_state_dir(tmp_path.resolve())
    assert (tmp_path / "gatewayd.sqlite3").exists()


def test_keep_keeps_everything_and_says_so(tmp_path):
    state = tmp_path / "var"
    state.mkdir()
    earlier_demo(state, marker=False)
    said = prepare_state_dir(state, keep=True)
    assert said.startswith(f"state: kept {state} (--keep)") and "open alerts" in said
    assert (state / "gatewayd.sqlite3").read_bytes() == b"old store"
    assert (state / "nodes" / "pump-3" / "trip.json").exists() and (state / MARKER).exists()


def test_the_summary_tells_trained_from_loaded_models():
    models = {"pump-1": {"version": 1}, "pump-2": {"version": 2}, "pump-3": {"version": None}}
    assert (
        models_line(models, {"pump-1": None, "pump-2": None, "pump-3": None})
        == "models trained in this run: pump-1 v1, pump-2 v2"
    )
    assert (
        models_line(models, {"pump-1": 1, "pump-2": 1, "pump-3": None})
        == "models trained in this run: pump-2 v2; loaded from an earlier run: pump-1 v1"
    )
    assert models_line({"pump-1": {"version": None}}, {"pump-1": None}) == "models trained in this run: none"


def test_the_written_configuration_does_not_promise_a_rerun():
    assert "run it again" not in DEMO_CONFIG
    text = demo_config(Path("/x/var"), [5020], 0.5, Path("/x/var/demo-gatewayd.toml"))
    first = text.splitlines()[0]
    assert first.startswith("# Written by `gatewayd demo`")  # how an earlier demo's folder is recognised
    assert "gatewayd run" not in text  # its virtual nodes are gone: nothing to run against
    assert "nothing answers" in text and "gatewayd status --config /x/var/demo-gatewayd.toml" in text
    assert "unless given --keep" in text


def test_keep_is_the_options_name_and_reuse_still_works():
    parser = build_parser()
    assert parser.parse_args(["demo", "--keep"]).keep and parser.parse_args(["demo", "--reuse"]).keep
    assert not parser.parse_args(["demo"]).keep
    demo_help = next(a for a in parser._actions if a.dest == "command").choices["demo"].format_help()
    assert "--keep, --reuse" in demo_help and "unless --keep" in demo_help


def demo(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [*GATEWAYD, "demo", "--duration", "5", "--progress", "1", "--interval", "0.2", "--dashboard-port", "0", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


@pytest.mark.integration
def test_a_second_run_starts_with_none_of_the_first_runs_alerts(tmp_path):
    state = tmp_path / "var"
    first = demo(tmp_path)
    assert first.splitlines()[0] == f"state: {state} (new)"
    # What a first run with --fault-after leaves: an open model alert, an open edge alert and the
    # last pump's trip latch in its node's flash.
    store = Store.in_state_dir(state)
    try:
        store.record_alert(Alert("demo:pump-3:model:1", "pump-3", ["current"], "critical", "model", 1, {}))
        store.record_alert(Alert("demo:pump-3:current:1", "pump-3", ["current"], "critical", "edge", 1, {}))
        readings = store.reading_count()
    finally:
        store.close()
    assert readings > 0
    (state / "nodes" / "pump-3" / "trip.json").write_text('{"latched": 1, "cause": 771, "trips": 1}')

    second = demo(tmp_path)
    assert second.splitlines()[0].startswith(f"state: {state} (cleared")
    progress = [line for line in second.splitlines() if "] stored " in line]
    assert progress and all(line.endswith(" readings, 0 alerts") for line in progress), second
    assert "models trained in this run: none" in second and "loaded from" not in second
    store = Store(state / "gatewayd.sqlite3", readonly=True)
    try:
        assert store.alerts() == [] and store.open_alerts("model") == []
        assert store.reading_count() == int(re.search(r"summary: (\d+) readings stored", second)[1])  # this run's only
    finally:
        store.close()
    assert not (state / "nodes" / "pump-3" / "trip.json").exists()
    assert (state / "nodes" / "pump-3" / "output-pump_enable").read_text() == "1"  # the pump runs again

    # --keep carries the state on, and says so on its first line
    store = Store.in_state_dir(state)
    try:
        store.record_alert(Alert("demo:pump-3:model:2", "pump-3", ["current"], "critical", "model", 2, {}))
    finally:
        store.close()
    third = demo(tmp_path, "--keep")
    assert third.splitlines()[0].startswith(f"state: kept {state} (--keep)")
    store = Store(state / "gatewayd.sqlite3", readonly=True)
    try:
        assert [a["id"] for a in store.alerts()] == ["demo:pump-3:model:2"]
    finally:
        store.close()


@pytest.mark.integration
def test_the_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "thesis.tex").write_text("do not lose")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [*GATEWAYD, "demo", "--duration", "1", "--dashboard-port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1 and "did not write" in res.stderr
    assert "starting" not in res.stdout  # no node was started
    assert [p.name for p in (tmp_path / "var").iterdir()] == ["thesis.tex"]
