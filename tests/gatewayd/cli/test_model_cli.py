"""gatewayd model: keygen, train (from CSV and from the store), inspect, install, list,
rollback, with clear errors for bad input."""

import math
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from gatewayd.cli.main import main
from gatewayd.detection.local_training import local_key
from gatewayd.store.database import Reading, Store


def write_csv(path: Path, rows: int = 900, sep: str = ";") -> Path:
    rng = np.random.default_rng(0)
    lines = [sep.join(["datetime", "pressure", "flow", "label"])]
    for i in range(rows):
        p = 5 + math.sin(i / 40) + rng.normal(0, 0.02)
        lines.append(
            sep.join(
                [
                    f"2026-11-24 08:{i // 60 % 60:02d}:{i % 60:02d}" if i < 3600 else str(i),
                    f"{p:.4f}",
                    f"{2 * p + rng.normal(0, 0.02):.4f}",
                    "0",
                ]
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def site(tmp_path):
    assert main(["model", "keygen", "--private", str(tmp_path / "k.pem"), "--public", str(tmp_path / "k.pub")]) == 0
    config = tmp_path / "gatewayd.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[models]\npublic_keys = ["{tmp_path / "k.pub"}"]\n'
        '[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\n'
    )
    return tmp_path, config


def train(tmp, *extra):
    return main(["model", "train", "--name", "pump", "--key", str(tmp / "k.pem"), "--trees", "20", *extra])


def test_keygen_keeps_the_private_key_private_and_never_overwrites(site, capsys):
    tmp, _ = site
    assert stat.S_IMODE(os.stat(tmp / "k.pem").st_mode) == 0o600
    before = (tmp / "k.pem").read_bytes()
    assert main(["model", "keygen", "--private", str(tmp / "k.pem"), "--public", str(tmp / "x.pub")]) == 2
    assert (tmp / "k.pem").read_bytes() == before and "exists" in capsys.readouterr().err


def test_train_inspect_install_rollback(site, capsys):
    tmp, config = site
    csv = write_csv(tmp / "normal.csv")
    assert train(tmp, "--csv", str(csv), "--channels", "pressure,flow", "--version", "1", "--out", str(tmp / "b1")) == 0
    out = capsys.readouterr()
    assert "windows" in out.err and "isolation forest" in out.err  # progress on long work
    assert main(["model", "inspect", str(tmp / "b1"), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "pump v1" in out and "verification: ok" in out and "FULLY_CONNECTED" in out and "GATHER" in out
    assert re.search(r"t2 typical [-0-9.e+]+, level .* x ln\(0\.1/alpha\), at least [0-9.e+]+", out), out
    assert main(["model", "install", str(tmp / "b1"), "--config", str(config)]) == 0
    assert (
        train(
            tmp,
            "--csv",
            str(csv),
            "--channels",
            "pressure,flow",
            "--version",
            "2",
            "--out",
            str(tmp / "b2"),
            "--window-s",
            "20",
            "--hop-s",
            "10",
        )
        == 0
    )
    assert main(["model", "install", str(tmp / "b2"), "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["model", "list", "--config", str(config)]) == 0
    assert "pump: current v2, previous v1" in capsys.readouterr().out
    assert main(["model", "rollback", "pump", "--config", str(config)]) == 0
    assert main(["model", "list", "--config", str(config)]) == 0
    assert "pump: current v1, rolled back: v2" in capsys.readouterr().out
    assert main(["model", "install", str(tmp / "b1"), "--config", str(config)]) == 1
    assert "not above the installed version 1" in capsys.readouterr().err


def test_inspect_reports_a_tampered_bundle(site, capsys):
    tmp, _ = site
    write_csv(tmp / "n.csv", sep=",")
    assert (
        train(
            tmp, "--csv", str(tmp / "n.csv"), "--channels", "pressure,flow", "--version", "1", "--out", str(tmp / "b")
        )
        == 0
    )
    with open(tmp / "b" / "autoencoder.tflite", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01")
    capsys.readouterr()
    assert main(["model", "inspect", str(tmp / "b"), "--public-key", str(tmp / "k.pub")]) == 1
    assert "verification: FAILED" in capsys.readouterr().out


def test_train_from_the_store(site, capsys):
    tmp, config = site
    store = Store.in_state_dir(tmp / "state")
    store.register_device("pump-1", "edge-node", "test", {}, [("pressure", "bar"), ("flow", "l/min")])
    t0 = 1_795_000_000_000
    readings = []
    for i in range(900):
        p = 5 + math.sin(i / 40)
        readings += [Reading("pump-1", "pressure", t0 + 1000 * i, p), Reading("pump-1", "flow", t0 + 1000 * i, 2 * p)]
    store.write_readings(readings)
    store.close()
    assert train(tmp, "--device", "pump-1", "--config", str(config), "--version", "1", "--out", str(tmp / "b")) == 0
    assert main(["model", "inspect", str(tmp / "b"), "--config", str(config)]) == 0
    assert "from store:pump-1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--csv", "{tmp}/normal.csv", "--channels", "pressure,nope"], "no column 'nope'"),
        (["--csv", "{tmp}/missing.csv"], "No such file"),
        (["--csv", "{tmp}/short.csv"], "training needs at least"),
        (["--csv", "{tmp}/bad.csv"], "bad.csv:3: column 'flow': not a number"),
        (["--device", "pump-9", "--config", "{tmp}/gatewayd.toml"], "no store|no device"),
    ],
)
def test_bad_training_input_is_a_clear_error_and_writes_nothing(site, capsys, args, message):
    tmp, _ = site
    write_csv(tmp / "normal.csv")
    write_csv(tmp / "short.csv", rows=40)
    (tmp / "bad.csv").write_text("t,pressure,flow\n1,2,3\n2,3,x\n")
    Store.in_state_dir(tmp / "state").close()
    rc = train(tmp, *[a.format(tmp=tmp) for a in args], "--version", "1", "--out", str(tmp / "b"))
    assert rc == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not (tmp / "b").exists()


def test_a_world_readable_private_key_is_refused(site, capsys):
    tmp, _ = site
    write_csv(tmp / "normal.csv")
    os.chmod(tmp / "k.pem", 0o644)
    assert train(tmp, "--csv", str(tmp / "normal.csv"), "--version", "1", "--out", str(tmp / "b")) == 1
    assert "owner only" in capsys.readouterr().err


def test_inspect_trusts_the_gateways_own_key_and_names_the_key_that_verified(site, capsys):
    tmp, config = site
    write_csv(tmp / "n.csv", sep=",")
    assert train(tmp, "--csv", str(tmp / "n.csv"), "--version", "1", "--out", str(tmp / "operator")) == 0
    # a bundle the gateway trained itself: signed with its own key, in its state directory
    own_private, _ = local_key(tmp / "state")
    shutil.copytree(tmp / "operator", tmp / "own")
    assert main(["model", "sign", str(tmp / "own"), "--key", str(own_private)]) == 0
    bare = tmp / "bare.toml"  # no public keys configured, as in the demo's configuration
    bare.write_text(config.read_text().replace(f'public_keys = ["{tmp / "k.pub"}"]', ""))
    capsys.readouterr()
    assert main(["model", "inspect", str(tmp / "own"), "--config", str(bare)]) == 0
    own_public = tmp / "state" / "keys" / "local-signing.pub"
    assert f"verification: ok, signed with the gateway's own key {own_public} (1 tried)" in capsys.readouterr().out
    assert main(["model", "inspect", str(tmp / "operator"), "--config", str(config)]) == 0
    assert f"verification: ok, signed with configured public key {tmp / 'k.pub'} (2 tried)" in capsys.readouterr().out
    # a key the gateway does not know still fails, naming what was tried
    assert main(["model", "inspect", str(tmp / "operator"), "--config", str(bare)]) == 1
    out = capsys.readouterr().out
    assert "verification: FAILED: " in out and "does not verify with any configured public key" in out
    assert f"tried: the gateway's own key {own_public}" in out
