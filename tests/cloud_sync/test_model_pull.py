"""Model pulls from the reference endpoint over loopback: a good bundle is installed; a tampered
one, one signed with another key, a truncated download, an older version, an expired manifest
and a disk that fills up during the download are refused, and the installed model stays."""

import errno
import json
import shutil

import numpy as np
import pytest
import requests

from cloud_sync import model_pull
from cloud_sync.model_pull import ModelPuller
from cloud_sync.server import BackgroundEndpoint
from gatewayd.detection.features import FeatureSpec
from gatewayd.models.bundle import MANIFEST, generate_keypair, load_private_key, load_public_key, write_bundle
from gatewayd.models.install import ModelStore
from gatewayd.models.training import train_bundle
from tests.cloud_sync.faults import TruncatedBundles


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    spec = FeatureSpec(("a", "b"), stats=("mean", "std"))
    x = rng.normal(size=(100, 4))
    return {
        v: train_bundle(x, np.arange(100), spec, name="pump-1", version=v, source="cloud", trees=10) for v in (1, 2, 3)
    }


@pytest.fixture
def truncation():
    """Switch on (`.active = True`) to have bundle downloads cut off half-way."""
    return TruncatedBundles()


@pytest.fixture
def cloud(tmp_path, truncation):
    generate_keypair(tmp_path / "cloud.pem", tmp_path / "cloud.pub")
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    endpoint = BackgroundEndpoint(tmp_path / "cloud", wrap=truncation.wrap)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {endpoint.tokens.issue('gw')}"
    models = ModelStore(tmp_path / "models", [load_public_key(tmp_path / "cloud.pub")])
    puller = ModelPuller(session, endpoint.url, models, timeout_s=5)
    yield tmp_path, puller, models
    session.close()
    endpoint.stop()


def publish(tmp_path, trained, version, key="cloud.pem", **changes):
    target = tmp_path / "cloud" / "bundles" / "gw" / "pump-1" / str(version)
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    b = trained[version]
    return write_bundle(target, {**b.manifest, **changes}, b.files, load_private_key(tmp_path / key))


def unpublish(tmp_path, version):
    shutil.rmtree(tmp_path / "cloud" / "bundles" / "gw" / "pump-1" / str(version))


def assert_clean(models):
    leftovers = [p.name for p in models.root.rglob(".*") if p.name.startswith((".download", ".staging"))]
    assert leftovers == []


def test_good_bundle_installed_then_bad_ones_refused(cloud, trained, truncation):
    tmp, puller, models = cloud
    publish(tmp, trained, 1)
    assert puller.poll().installed == ["pump-1 v1"]
    assert puller.poll().installed == [] and models.installed_version("pump-1") == 1  # nothing newer
    assert puller.not_modified == 1  # the listing was answered 304: If-None-Match with its ETag

    cases = {}
    folder = publish(tmp, trained, 2)  # a byte flipped in a model file
    data = bytearray((folder / "iforest.tflite").read_bytes())
    data[100] ^= 0xFF
    (folder / "iforest.tflite").write_bytes(bytes(data))
    cases["tampered"] = puller.poll().rejected
    unpublish(tmp, 2)
    puller.refused.clear()

    publish(tmp, trained, 2, key="other.pem")
    cases["wrong key"] = puller.poll().rejected
    unpublish(tmp, 2)
    puller.refused.clear()

    publish(tmp, trained, 2, expires="2020-01-01T00:00:00+00:00")
    cases["expired"] = puller.poll().rejected
    unpublish(tmp, 2)
    puller.refused.clear()

    folder = publish(tmp, trained, 2)  # the manifest edited after signing
    m = json.loads((folder / MANIFEST).read_text())
    m["models"]["iforest"]["threshold"] = 0.99
    (folder / MANIFEST).write_text(json.dumps(m))
    cases["edited"] = puller.poll().rejected
    unpublish(tmp, 2)
    puller.refused.clear()

    publish(tmp, trained, 2)
    truncation.active = True
    cases["truncated"] = puller.poll().rejected
    truncation.active = False
    puller.refused.clear()

    assert "sha256" in cases["tampered"][0]
    assert "signature" in cases["wrong key"][0] and "signature" in cases["edited"][0]
    assert "expired" in cases["expired"][0]
    assert cases["truncated"] and "pump-1 v2" in cases["truncated"][0]
    assert "IncompleteRead" in cases["truncated"][0] or "truncated" in cases["truncated"][0]  # cut off, not refused
    assert models.current("pump-1")[0].version == 1
    assert_clean(models)

    assert puller.poll().installed == ["pump-1 v2"]  # the good v2, once it is served whole
    unpublish(tmp, 2)
    assert puller.poll().installed == [] and models.installed_version("pump-1") == 2  # v1 is older: left alone


def test_disk_full_during_download_leaves_nothing_half_installed(cloud, trained, monkeypatch):
    tmp, puller, models = cloud
    publish(tmp, trained, 1)
    puller.poll()
    publish(tmp, trained, 2)
    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f = f
            self.written = 0

        def write(self, data):
            self.written += len(data)
            if self.written > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(
        model_pull,
        "open",
        lambda path, mode="r", *a, **k: (
            FullDisk(real_open(path, mode, *a, **k)) if "w" in mode else real_open(path, mode, *a, **k)
        ),
        raising=False,
    )
    outcome = puller.poll()
    assert outcome.installed == [] and "No space left" in outcome.rejected[0]
    assert models.current("pump-1")[0].version == 1
    assert_clean(models)
    monkeypatch.undo()
    puller.refused.clear()
    assert puller.poll().installed == ["pump-1 v2"]  # space again: the next poll installs it
