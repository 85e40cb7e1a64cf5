"""`cloud-sync retrain`: train a bundle on what gateways uploaded, sign it, publish it.

The cloud sees one-minute summaries (count, mean, std, min, max, last per channel), not raw
readings, so a cloud bundle scores one-minute windows with those statistics; the gateway
computes the same statistics over its own 60 s windows once the bundle is installed. Minutes
near an alert are left out of training unless an operator labelled the alert a false positive
(then they are normal operation the model should learn). The training code is the gateway's.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatewayd.detection.features import FeatureSpec
from gatewayd.models.bundle import load_private_key, write_bundle
from gatewayd.models.scaling import SCALE_FLOOR
from gatewayd.models.training import train_bundle

from .bundles import BundleStore
from .codec import decode_summary
from .storage import Storage

STATS = ("mean", "std", "min", "max", "last")
MARGIN_MS = 60_000  # minutes this close to an alert are not trained on
OPEN_ALERT_MS = 600_000  # an alert with no close yet covers this long


@dataclass
class RetrainResult:
    name: str
    version: int
    windows: int
    excluded_minutes: int


def _alert_spans(storage: Storage, gateway: str) -> dict[str, list[tuple[int, int]]]:
    """Per device, the time spans of alerts not labelled false positive."""
    alerts: dict[str, dict] = {}
    for r in storage.records(gateway, "alert"):
        p = r["payload"]
        alerts[p["id"]] = {"device": p["device"], "opened": p["opened_ms"], "closed": None, "label": None}
    for r in storage.records(gateway, "alert_update"):
        p = r["payload"]
        if p["id"] in alerts and p.get("closed_ms"):
            alerts[p["id"]]["closed"] = p["closed_ms"]
    for r in storage.records(gateway, "label"):
        p = r["payload"]
        if p["alert_id"] in alerts:
            alerts[p["alert_id"]]["label"] = p["label"]
    spans: dict[str, list[tuple[int, int]]] = {}
    for a in alerts.values():
        if a["label"] == "false_positive":
            continue
        end = a["closed"] or a["opened"] + OPEN_ALERT_MS
        spans.setdefault(a["device"], []).append((a["opened"] - MARGIN_MS, end + MARGIN_MS))
    return spans


def minute_rows(
    storage: Storage, gateways: list[str], devices: list[str] | None
) -> tuple[list[str], list[tuple[str, int, np.ndarray, float]], int]:
    """(channels, rows of (device, minute, features, samples per minute), minutes excluded)."""
    rows: list[tuple[str, int, dict]] = []
    excluded = 0
    for gateway in gateways:
        spans = _alert_spans(storage, gateway)
        for r in storage.records(gateway, "summary"):
            minute = r["payload"]["minute_ms"]
            for device, packed in r["payload"]["devices"].items():
                channels = decode_summary(packed)
                if devices is not None and device not in devices:
                    continue
                if any(lo <= minute + 60_000 and minute <= hi for lo, hi in spans.get(device, [])):
                    excluded += 1
                    continue
                rows.append((device, minute, channels))
    if not rows:
        return [], [], excluded
    names = sorted(set.intersection(*(set(c) for _, _, c in rows)))
    out = []
    for device, minute, channels in rows:
        feats = np.array(
            [channels[c][s] if channels[c].get(s) is not None else np.nan for c in names for s in STATS],
            dtype=np.float64,
        )
        out.append((device, minute, feats, float(np.median([channels[c]["count"] for c in names]))))
    return names, out, excluded


def retrain(
    storage: Storage,
    bundles: BundleStore,
    key_path: Path,
    *,
    name: str,
    gateways: list[str],
    devices: list[str] | None = None,
    publish_to: list[str],
    trees: int = 100,
    scale_floor: float = SCALE_FLOOR,
    job_id: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> RetrainResult:
    """Train on the gateways' summaries and publish the signed bundle under every scope of
    `publish_to` with one version. A job run again (a worker killed mid-way) publishes no
    second version: it finds what it published and completes only what is missing."""
    done = {scope: bundles.published_by(scope, name, job_id) for scope in publish_to} if job_id else {}
    if done and all(v is not None for v in done.values()):
        version = next(iter(done.values()))
        assert version is not None
        progress(f"{name} v{version} was published by this job already")
        return RetrainResult(name, version, 0, 0)
    channels, rows, excluded = minute_rows(storage, gateways, devices)
    if not rows:
        raise ValueError(
            f"no summaries uploaded for {', '.join(gateways)}" + (f" / {', '.join(devices)}" if devices else "")
        )
    per_minute = float(np.median([r[3] for r in rows]))
    spec = FeatureSpec(
        tuple(channels), window_s=60.0, hop_s=60.0, stats=STATS, sample_period_s=min(60.0, 60.0 / max(per_minute, 1.0))
    )
    features = np.vstack([r[2] for r in rows])
    ends = np.array([r[1] + 60_000 for r in rows], dtype=np.int64)
    row_devices = sorted({r[0] for r in rows})
    progress(
        f"{len(rows)} minutes of {len(row_devices)} device(s) ({excluded} near alerts left out), "
        f"channels {', '.join(channels)}"
    )
    # above anything published and anything a gateway reported running (it may have trained its own)
    reported = [
        int(r["payload"]["version"])
        for g in gateways
        for r in storage.records(g, "model_event")
        if r["payload"].get("name") == name and isinstance(r["payload"].get("version"), int)
    ]
    fixed = [v for v in done.values() if v is not None]
    version = (
        fixed[0] if fixed else max([v for s in publish_to for v in bundles.versions(s, name)] + reported, default=0) + 1
    )
    trained = train_bundle(
        features,
        ends,
        spec,
        name=name,
        version=version,
        source=f"cloud:{'+'.join(gateways)}",
        trees=trees,
        scale_floor=scale_floor,
        devices=[r[0] for r in rows] if len(row_devices) > 1 else None,
        progress=progress,
    )
    key = load_private_key(key_path)
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        for _ in range(100):  # another job took the version meanwhile: the next one, signed again
            folder = Path(tmp) / str(version)
            shutil.rmtree(folder, ignore_errors=True)
            write_bundle(folder, {**trained.manifest, "version": version}, trained.files, key)
            scopes = [s for s in publish_to if done.get(s) is None]
            if bundles.publish(scopes[0], name, version, folder, job_id) or fixed:
                for scope in scopes[1:]:
                    bundles.publish(scope, name, version, folder, job_id)
                return RetrainResult(name, version, len(rows), excluded)
            version = max(bundles.versions(scopes[0], name), default=version) + 1
    raise RuntimeError(f"no free version for {name} after 100 tries")
