"""gatewayd alert list: an unknown device is refused, not shown as one without alerts; --kind
and --state narrow the list as the dashboard's filters do; bad values are refused by argparse."""

import pytest

from gatewayd.alerts.alert import Alert, AlertChange
from gatewayd.cli.main import main
from gatewayd.store.database import Store


@pytest.fixture
def config(tmp_path):
    state = tmp_path / "state"
    store = Store(state / "gatewayd.sqlite3")
    store.register_device("pump-1", "edge-node", "tcp://x", {}, [("flow", "m3/h")])
    for i, (device, kind) in enumerate(
        [("pump-1", "model"), ("pump-1", "edge"), ("pump-2", "drift"), ("pump-2", "device")]
    ):
        store.record_alert(Alert(f"g:{device}:{kind}:{i}", device, ["flow"], "warning", kind, i, {}))
    store.update_alert(AlertChange("g:pump-1:edge:1", "pump-1", "edge", closed_ms=10))
    store.acknowledge_alert("g:pump-2:drift:2")
    store.update_alert(AlertChange("g:pump-2:device:3", "pump-2", "device", closed_ms=11))
    store.label_alert("g:pump-2:device:3", "true")
    store.close()
    path = tmp_path / "gatewayd.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{state}"\n\n[[devices]]\nname = "pump-1"\nhost = "h"\n\n'
        '[[devices]]\nname = "pump-3"\nhost = "h3"\n'
    )
    return path


def listed(capsys, config, *args: str) -> list[str]:
    assert main(["alert", "list", "--config", str(config), *args]) == 0
    return [line.split()[0] for line in capsys.readouterr().out.splitlines()]


def test_an_unknown_device_is_refused_with_the_known_ones(config, capsys):
    assert main(["alert", "list", "--config", str(config), "--device", "pump-9"]) == 2
    # configured, in the store's channels, or only in its alerts (pump-2)
    assert capsys.readouterr().err == "error: no device 'pump-9'; known: pump-1, pump-2, pump-3\n"
    assert listed(capsys, config, "--device", "pump-3") == []  # known, without alerts
    assert listed(capsys, config, "--device", "pump-2") == ["g:pump-2:device:3", "g:pump-2:drift:2"]


def test_kind_and_state_narrow_the_list(config, capsys):
    assert listed(capsys, config, "--kind", "model") == ["g:pump-1:model:0"]
    assert listed(capsys, config, "--kind", "model", "--kind", "edge") == ["g:pump-1:edge:1", "g:pump-1:model:0"]
    assert listed(capsys, config, "--state", "open") == ["g:pump-2:drift:2", "g:pump-1:model:0"]
    assert listed(capsys, config, "--state", "closed") == ["g:pump-2:device:3", "g:pump-1:edge:1"]
    assert listed(capsys, config, "--state", "open", "--state", "unacknowledged") == ["g:pump-1:model:0"]
    assert listed(capsys, config, "--state", "acknowledged") == ["g:pump-2:device:3", "g:pump-2:drift:2"]
    assert listed(capsys, config, "--state", "labelled") == ["g:pump-2:device:3"]
    assert listed(capsys, config, "--state", "unlabelled", "--device", "pump-2") == ["g:pump-2:drift:2"]
    assert listed(capsys, config, "--kind", "drift", "--state", "closed") == []


@pytest.mark.parametrize("option", [["--kind", "bogus"], ["--state", "new"]])
def test_values_outside_the_choices_are_refused(config, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        main(["alert", "list", "--config", str(config), *option])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_the_choices_are_every_kind_and_state_there_is(capsys):
    with pytest.raises(SystemExit):
        main(["alert", "list", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--kind {edge,model,drift,device,operator}" in text
    assert "--state {open,closed,acknowledged,unacknowledged,labelled,unlabelled}" in text
