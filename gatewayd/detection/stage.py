"""The detection stage of the daemon: polls in, windows, scores, incidents and alerts out.

- Polls arrive through a bounded queue (`QUEUE_VALUES` values, each poll as one small array);
  when detection falls behind, the newest polls are not windowed (counted as `dropped`), while
  the store still gets every one.
- Each device's windows close on its own poll times; each scope (a device, or a segment of
  devices) has one installed bundle; each device has its own rules state.
- With no bundle installed for a scope, windows are collected for `bootstrap_minutes`, then a
  worker process trains both models, signs them with the gateway's own key and installs them
  as the scope's first bundle. `periodic` and `disposable` lifecycles retrain the same way from
  recent windows judged normal; drift can trigger it too.
- A bundle installed by anyone (`gatewayd model install`, the cloud agent) takes over at the
  next window: the models directory is checked at every window close.
- Operator labels (CLI, MQTT) are read from the store and move the scope's threshold
  multiplier within bounds; every change is logged and stored.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gatewayd.alerts.alert import Alert, AlertChange, AlertSink
from gatewayd.config import Config, DetectionSection
from gatewayd.detection.features import FeatureSpec
from gatewayd.models import MIN_TRAINING_WINDOWS as MIN_WINDOWS
from gatewayd.models.bundle import BundleError
from gatewayd.models.install import ModelStore
from gatewayd.models.scorer import Scorer
from gatewayd.store.faults import StoreFault

from .baseline_file import FILE_NAME as BASELINES_FILE
from .baseline_file import BaselineFile
from .detector import Detector, DriftSettings, WindowResult
from .drift_alerts import DriftAlerts
from .feedback import FeedbackSettings, ThresholdAdapter
from .local_training import local_key, write_job
from .rules import Incident, RuleSettings, combine
from .score_history import ScoreHistory, ring_capacity
from .windows import DeviceWindows, RecentWindows

if TYPE_CHECKING:
    from gatewayd.store.async_store import AsyncStore

log = logging.getLogger("gatewayd.detection")
QUEUE_VALUES = 100_000  # about 1 MB of polls waiting for the windows
GLOBAL = "global"  # the bundle name of the global scope
# Recent normal windows kept for (re)training, shared out among the scopes: 8 MB of features
# at most whatever the number of devices, between 64 and 20,000 windows per scope (100 nodes of
# 8 channels: 2.4 h each; one node: 28 h).
KEEP_BYTES_TOTAL = 8 << 20
KEEP_WINDOWS_MAX = 20_000  # per scope: 28 h at a 5 s hop
LABEL_CHECK_S = 2.0
TRAINING_RETRY_S = 600.0  # after a failed training, the next try waits this long


def rule_settings(d: DetectionSection) -> RuleSettings:
    """The alert rules the [detection] section sets."""
    return RuleSettings(
        combine=d.combine,
        weights=tuple(d.weights or ()),
        scores=tuple(d.scores),
        false_alarms_per_day=d.false_alarms_per_day,
        open_after=d.open_after,
        close_after=d.close_after,
        critical_ratio=d.critical_ratio,
        follow_windows=d.baseline_follow_windows,
    )


def default_spec(d: DetectionSection, channels: list[str], period: float) -> FeatureSpec:
    """The feature spec of a device with no bundle yet, from the settings and its poll interval."""
    pairs = tuple((a, b) for a, b in d.pairs if a in channels and b in channels)
    fft = tuple(c for c in d.fft_channels if c in channels)
    bands = min(d.fft_bands, max(1, int(d.window_s / period / 2)))
    return FeatureSpec(
        tuple(channels),
        window_s=d.window_s,
        hop_s=d.hop_s,
        stats=tuple(d.stats),
        sample_period_s=min(period, d.window_s),
        pairs=pairs,
        fft_channels=fft,
        fft_bands=bands,
    )


@dataclass
class ScopeState:
    name: str
    devices: list[str]
    version: int | None = None
    scorer: Scorer | None = None
    collected: RecentWindows = field(default_factory=lambda: RecentWindows(KEEP_BYTES_TOTAL))  # judged normal
    collected_ms: dict[str, int] = field(default_factory=dict)  # per device: data time collected
    last_end_ms: dict[str, int] = field(default_factory=dict)
    training: asyncio.Task | None = None
    trained_at: float = 0.0  # monotonic
    failed_at: float | None = None  # monotonic time of the last failed training
    adapter: ThresholdAdapter = field(default_factory=ThresholdAdapter)
    probation: int = 0  # windows left in a replacement bundle's health check
    probation_alarms: int = 0


@dataclass
class StageStats:
    windows: int = 0
    scored: int = 0
    dropped: int = 0
    errors: int = 0
    incidents: int = 0
    trainings: int = 0
    drift_events: int = 0


class DetectionStage:
    def __init__(self, config: Config, store: AsyncStore, publish_alert: AlertSink | None):
        self.config = config
        self.settings = config.detection
        self.store = store
        self.publish_alert = publish_alert
        widest = max(len(dev.registers) or 8 for dev in config.devices)  # an edge node has a few channels
        self.queue: asyncio.Queue[tuple[str, int, tuple[str, ...], np.ndarray]] = asyncio.Queue(
            max(100, QUEUE_VALUES // widest)
        )
        self.channel_names: dict[str, tuple[str, ...]] = {}  # per device, in the order polls are queued
        self.stats = StageStats()
        d = self.settings
        for old in ("margins", "false_alarm_rate"):
            if getattr(d, old) is not None:
                log.warning(
                    "[detection] %s is replaced by false_alarms_per_day (%g) and ignored", old, d.false_alarms_per_day
                )
        self.rules = rule_settings(d)
        self.drift = DriftSettings(threshold=d.drift_threshold)
        self.scope_of: dict[str, str] = {}
        self.scopes: dict[str, ScopeState] = {}
        configured = {dev.name for dev in config.devices}
        if d.scope == "global":
            self.scope_of = {device: GLOBAL for device in configured}
        if d.scope == "segment":
            for seg in d.segments:
                for device in seg.devices:
                    if device in configured:
                        self.scope_of[device] = seg.name
        for device in configured:
            name = self.scope_of.setdefault(device, device)
            self.scopes.setdefault(name, ScopeState(name, [])).devices.append(device)
        for scope in self.scopes.values():
            scope.collected = RecentWindows(
                KEEP_BYTES_TOTAL // len(self.scopes), least=2 * MIN_WINDOWS, most=KEEP_WINDOWS_MAX
            )
        from gatewayd.models.bundle import load_public_key

        self.models = ModelStore(config.models_path, [load_public_key(Path(p)) for p in config.models.public_keys])
        self.key_path: Path | None = None
        self._local_key()
        self.windows: dict[str, DeviceWindows] = {}
        self.specs: dict[str, FeatureSpec] = {}
        self.detectors: dict[str, Detector] = {}
        self.incident_ids: dict[int, str] = {}
        self.scores: dict[str, ScoreHistory] = {}  # per device, for the dashboard
        self.last_label: int | None = None
        self.training_slot = asyncio.Semaphore(1)  # one training at a time: acquisition keeps its cores
        self.next_label_check = 0.0
        self.resumed: dict[str, dict] = {}  # device -> its open model alert from a previous run
        self.baselines = BaselineFile(config.state_path / BASELINES_FILE)
        # One open drift alert per device; it closes after twice the windows a drift test takes
        # to measure a stream again without a new change (see drift_alerts.py).
        self.drift_alerts = DriftAlerts(
            config.gateway.name,
            store,
            self._publish,
            holdoff_s=d.drift_alert_holdoff_s,
            quiet_windows=2 * self.drift.min_samples,
            retrain=d.retrain_on_drift,
        )

    def _local_key(self) -> Path | None:
        """The gateway's own signing key, whose bundles it trusts; made on first use. A state
        directory that cannot be written yet leaves it for later: detection goes on without
        local training until then."""
        if self.key_path is None:
            try:
                self.key_path, public = local_key(self.config.state_path)
            except OSError as exc:
                log.warning(
                    "no local signing key yet (%s): the gateway trains no model of its own until it can write %s",
                    exc.strerror or exc,
                    self.config.state_path,
                )
                return None
            self.models.public_keys.append(public)
        return self.key_path

    # -- input ---------------------------------------------------------------------------

    def offer(self, device: str, ts_ms: int, values: dict[str, float]) -> None:
        """A poll's values, from the pollers' hand-off; never blocks acquisition."""
        if self.queue.full():
            self.stats.dropped += 1
            return
        names = self.channel_names.get(device)
        if names is None or len(names) != len(values) or any(c not in values for c in names):
            names = self.channel_names[device] = tuple(sorted(values))
        self.queue.put_nowait((device, ts_ms, names, np.array([values[c] for c in names], dtype=np.float64)))

    # -- specs, models -------------------------------------------------------------------

    async def _load(self, scope: ScopeState) -> None:
        """Load the scope's installed bundle if it changed; a bad one is logged and skipped."""
        version = self.models.installed_version(scope.name)
        if version is None or version == scope.version:
            return
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(None, self.models.current, scope.name)
            assert found is not None
            manifest, folder = found
            scorer = await loop.run_in_executor(
                None, lambda: Scorer(manifest, folder, threads=self.config.models.threads)
            )
        except (BundleError, ValueError, OSError) as exc:
            log.error(
                "%s: bundle v%s not loaded, keeping %s: %s",
                scope.name,
                version,
                f"v{scope.version}" if scope.version else "no model",
                exc,
            )
            if scope.scorer is not None and self.models.linked(scope.name, "previous") is not None:
                await self._rollback(scope, version, f"does not load: {exc}")
            else:
                scope.version = version  # do not retry the same files at every window
            return
        # A newer bundle replacing one in use is checked; going back (a rollback) is not.
        replacing = scope.scorer is not None and scope.version is not None and version > scope.version
        if replacing and scope.scorer is not None and scorer.spec == scope.scorer.spec:
            rows = list(scope.collected)[-self.settings.health_windows :]
            if len(rows) >= min(5, self.settings.health_windows):  # health check before it takes over
                rate = self._alarm_rate(scope, scorer, rows)
                if rate > self.settings.health_max_alert_rate:
                    scope.version = version
                    await self._rollback(
                        scope,
                        version,
                        f"{rate:.0%} of the last {len(rows)} windows alarmed with it "
                        f"(at most {self.settings.health_max_alert_rate:.0%})",
                    )
                    return
                replacing = False  # checked already: no probation
        scope.scorer, scope.version = scorer, version
        if replacing:  # other features (or too few windows yet): checked on the windows it scores first
            scope.probation, scope.probation_alarms = self.settings.health_windows, 0
        await self.store.record_model_event(
            {"event": "loaded", "name": scope.name, "version": version, "source": manifest.training.get("source")}
        )
        scope.trained_at = time.monotonic()
        for device in scope.devices:
            self.specs[device] = scorer.spec
            if device in self.detectors:
                self.detectors[device].replace_scorer(scorer)
            else:
                detector = self.detectors[device] = Detector(
                    device, scorer, self.rules, self.drift, scope.adapter.multiplier
                )
                if self.baselines.restore(device, self._bundle_name(scope), detector.baseline):
                    log.info("%s: baseline restored from the previous run", device)
                self._resume(device, detector)
            window = self.windows.get(device)
            if window is None or window.spec != scorer.spec:
                self.windows[device] = DeviceWindows(scorer.spec)
        await self.drift_alerts.model_loaded(scope.devices, version, f"{scope.name} v{version}")
        log.info("%s: scoring with bundle v%d (%s)", scope.name, version, manifest.training.get("source"))

    @staticmethod
    def _bundle_name(scope: ScopeState) -> str:
        return f"{scope.name} v{scope.version}"

    def _baselines_now(self) -> dict[str, dict]:
        return self.baselines.snapshot(
            {
                device: (self._bundle_name(self.scopes[self.scope_of[device]]), detector.baseline)
                for device, detector in self.detectors.items()
            }
        )

    async def _save_baselines(self) -> None:
        """Every SAVE_EVERY_S, off the event loop: a slow SD card must not hold up the windows."""
        if self.baselines.due(time.monotonic()):
            await asyncio.get_running_loop().run_in_executor(None, self.baselines.save, self._baselines_now())

    def _resume(self, device: str, detector: Detector) -> None:
        """An incident left open by the daemon's previous run carries on under its id: it
        closes after `close_after` quiet windows, or goes on if the device is still abnormal."""
        alert = self.resumed.pop(device, None)
        if alert is None:
            return
        incident = Incident(device, alert["opened_ms"], severity=alert["severity"])
        detector.rules.incident = incident
        detector.rules.alarming_run = self.settings.open_after
        self.incident_ids[id(incident)] = alert["id"]
        log.info("%s: continuing the open alert %s", device, alert["id"])

    async def _open_alerts(self) -> None:
        """Model alerts a previous run left open, one per device (the newest; older ones are
        closed as superseded)."""
        for row in await self.store.open_alerts("model"):
            older = self.resumed.get(row["device"])
            if older is not None:
                await self.store.update_alert(
                    AlertChange(older["id"], row["device"], "model", closed_ms=row["opened_ms"])
                )
            self.resumed[row["device"]] = row

    # -- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        periods = {dev.name: dev.interval_s for dev in self.config.devices}
        try:
            await self._open_alerts()
        except StoreFault:
            log.warning("open model alerts not read (the store is degraded): they stay open")
        await self.drift_alerts.load()  # a degraded store leaves it for later
        self.baselines.load()
        for scope in self.scopes.values():
            try:
                await self._load(scope)
            except Exception:  # a models folder on a failing disk: tried again at the next window
                log.exception("%s: installed bundle not loaded", scope.name)
        try:
            while not stop.is_set():
                try:
                    device, ts_ms, names, values = await asyncio.wait_for(self.queue.get(), 0.5)
                except TimeoutError:
                    await self._check_labels()
                    continue
                if device not in self.windows:
                    self.specs[device] = default_spec(self.settings, list(names), periods.get(device, 1.0))
                    self.windows[device] = DeviceWindows(self.specs[device])
                windows = self.windows[device]
                for end_ms, features in windows.add(ts_ms, names, values):
                    try:
                        await self._window(device, end_ms, features, windows.spec)
                    except Exception:  # one bad window must not end detection for every device
                        self.stats.errors += 1
                        log.exception("%s: window ending %d not processed", device, end_ms)
                await self._check_labels()
        finally:
            self.baselines.save(self._baselines_now())
            trainings = [s.training for s in self.scopes.values() if s.training is not None]
            for t in trainings:
                t.cancel()
            await asyncio.gather(*trainings, return_exceptions=True)

    async def _window(self, device: str, end_ms: int, features: np.ndarray, spec: FeatureSpec) -> None:
        self.stats.windows += 1
        scope = self.scopes[self.scope_of[device]]
        await self._load(scope)
        if self.specs.get(device) != spec:
            return  # a new bundle with other features took over: this window was cut for the old one
        detector = self.detectors.get(device)
        if detector is None or scope.scorer is None:
            self._collect(scope, end_ms, features, device)
            if (
                scope.training is None
                and max(scope.collected_ms.values(), default=0) >= self.settings.bootstrap_minutes * 60_000
            ):
                self._start_training(scope, "bootstrap: no model installed")
            return
        result = detector.window(end_ms, features)
        self.stats.scored += 1
        await self._save_baselines()
        self._record_scores(device, detector, result, spec)
        if scope.probation > 0:
            scope.probation -= 1
            scope.probation_alarms += result.step.alarming
            if scope.probation == 0:
                rate = scope.probation_alarms / self.settings.health_windows
                if rate > self.settings.health_max_alert_rate:
                    await self._rollback(
                        scope,
                        scope.version or 0,
                        f"{rate:.0%} of its first {self.settings.health_windows} windows alarmed "
                        f"(at most {self.settings.health_max_alert_rate:.0%})",
                    )
        if not result.step.alarming and not result.step.incident_open and result.step.closed is None:
            self._collect(scope, end_ms, features, device)
        await self._incident(device, result, scope)
        await self._drift(device, end_ms, result.drift, scope)
        self._maybe_retrain(scope, end_ms)

    def _record_scores(self, device: str, detector: Detector, result: WindowResult, spec: FeatureSpec) -> None:
        history = self.scores.get(device)
        if history is None:
            history = self.scores[device] = ScoreHistory(ring_capacity(spec.hop_s, len(self.scope_of)))
        levels = detector.alarm_levels()
        every = result.all_ratios
        pca = [every[n] for n in ("pca_t2", "pca_q") if n in every]
        history.append(
            result.end_ms,
            {
                "ratio": result.step.ratio,
                "iforest_ratio": every["iforest"],
                "autoencoder_ratio": every["autoencoder"],
                "pca_ratio": max(pca) if pca else math.nan,
                "iforest": result.iforest,
                "autoencoder": result.autoencoder,
                "iforest_level": levels["iforest"],
                "autoencoder_level": levels["autoencoder"],
            },
        )

    def _collect(self, scope: ScopeState, end_ms: int, features: np.ndarray, device: str) -> None:
        # Data time collected, one window's step at a time: a wall-clock step forward counts as
        # one step, not as the days it jumped, and one back as nothing.
        last = scope.last_end_ms.get(device)
        if last is not None and end_ms > last:
            step = min(end_ms - last, int(2 * self.settings.hop_s * 1000))
            scope.collected_ms[device] = scope.collected_ms.get(device, 0) + step
        scope.last_end_ms[device] = end_ms
        scope.collected.append(end_ms, features, device)

    def _maybe_retrain(self, scope: ScopeState, end_ms: int) -> None:
        if self.settings.lifecycle == "static" or scope.training is not None:
            return
        if time.monotonic() - scope.trained_at >= self.settings.retrain_hours * 3600:
            self._start_training(scope, f"{self.settings.lifecycle} retraining")

    def _start_training(self, scope: ScopeState, reason: str) -> None:
        if scope.failed_at is not None and time.monotonic() - scope.failed_at < TRAINING_RETRY_S:
            return  # a training that failed (a full disk, the child killed for memory) is not retried at every window
        rows = list(scope.collected)
        if self.settings.lifecycle == "disposable" and rows:
            newest = rows[-1][0]
            rows = [r for r in rows if r[0] >= newest - self.settings.train_hours * 3_600_000]
        if len(rows) < MIN_WINDOWS:
            return
        scope.training = asyncio.create_task(self._train(scope, rows, reason))

    async def _train(self, scope: ScopeState, rows: list[tuple[int, np.ndarray, str]], reason: str) -> None:
        loop = asyncio.get_running_loop()
        version = (self.models.installed_version(scope.name) or 0) + 1
        while version in self.models.rolled_back(scope.name):
            version += 1
        spec = self.specs[rows[-1][2]]  # the scope's devices share their channels
        ends = np.array([r[0] for r in rows], dtype=np.int64)
        features = np.vstack([r[1] for r in rows])
        log.info("%s: training v%d on %d windows (%s)", scope.name, version, len(rows), reason)
        proc = None
        work: Path | None = None
        try:
            key = self._local_key()
            if key is None:
                raise RuntimeError(f"no signing key: {self.config.state_path} cannot be written")
            self.config.models_path.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=".training-", dir=self.config.models_path))
            write_job(
                work,
                features,
                ends,
                spec=spec.to_dict(),
                name=scope.name,
                version=version,
                trees=self.settings.trees,
                scale_floor=self.settings.scale_floor,
                source=f"gateway:{reason}",
                key=str(key),
                devices=[r[2] for r in rows] if self.settings.scope == "global" else None,
            )
            async with self.training_slot:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "gatewayd.detection.local_training",
                    str(work),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
                _, err = await proc.communicate()
            if proc.returncode != 0:
                last = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                raise RuntimeError(last[0])
            await loop.run_in_executor(None, self.models.install, work / "bundle")
            self.stats.trainings += 1
            scope.failed_at = None
            if self.settings.lifecycle == "disposable":
                scope.collected.clear()
            await self._load(scope)
        except asyncio.CancelledError:
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        except Exception as exc:  # a failed training is logged; scoring goes on with what it has
            log.error("%s: training failed: %s", scope.name, exc)
            scope.trained_at = scope.failed_at = time.monotonic()  # wait before trying again
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
            scope.training = None

    def _alarm_rate(self, scope: ScopeState, scorer: Scorer, rows: list[tuple[int, np.ndarray, str]]) -> float:
        """Share of these windows on which a bundle's models would alarm (combined ratio above 1)."""
        trial = Detector(rows[0][2], scorer, self.rules, DriftSettings(enabled=False), scope.adapter.multiplier)
        alarming = 0
        for _, features, device in rows:
            alarming += combine(trial.ratios(scorer.score(features, device).named), self.rules) > 1.0
        return alarming / len(rows)

    async def _rollback(self, scope: ScopeState, version: int, reason: str) -> None:
        """A new bundle failed its health check: the previous one is current again (the failed
        version is remembered and refused), and the outcome goes to the cloud."""
        loop = asyncio.get_running_loop()
        try:
            back_to = await loop.run_in_executor(None, self.models.rollback, scope.name)
        except BundleError as exc:
            log.error(
                "%s: v%d failed its health check (%s) and cannot be rolled back: %s", scope.name, version, reason, exc
            )
            scope.probation = 0
            return
        log.error("%s: v%d rolled back to v%d: %s", scope.name, version, back_to, reason)
        scope.probation = 0
        await self.store.record_model_event(
            {"event": "rollback", "name": scope.name, "version": version, "restored": back_to, "reason": reason}
        )
        await self._load(scope)

    # -- incidents, drift, feedback -----------------------------------------------------------

    async def _incident(self, device: str, result: WindowResult, scope: ScopeState) -> None:
        step = result.step
        incident = step.opened or step.escalated or step.closed
        if incident is None:
            return
        detail = self._detail(incident, result, scope)
        if step.opened is not None:
            alert = Alert.new(
                self.config.gateway.name,
                device,
                "model",
                kind="model",
                severity=incident.severity,
                opened_ms=incident.opened_ms,
                detail=detail,
                channels=incident.top_channels() or self.specs[device].channels,
            )
            self.incident_ids[id(incident)] = alert.id
            self.stats.incidents += 1
            await self.store.record_alert(alert)
            log.warning(
                "%s: anomaly (%s), ratio %.2f, features %s",
                device,
                incident.severity,
                step.ratio,
                ", ".join(f for f, _ in incident.top_features(3)),
            )
            self._publish(alert)
            return
        alert_id = self.incident_ids.get(id(incident))
        if alert_id is None:
            return
        if step.escalated is not None:
            escalated = AlertChange(alert_id, device, "model", severity="critical", detail=detail)
            await self.store.update_alert(escalated)
            self._publish(escalated)
        if step.closed is not None:
            closed = AlertChange(alert_id, device, "model", closed_ms=incident.closed_ms, detail=detail)
            await self.store.update_alert(closed)
            window_ms = int(self.specs[device].window_s * 1000)
            for channel in self.specs[device].channels:  # the raw data of the episode is kept
                await self.store.protect(
                    device, channel, incident.opened_ms - 2 * window_ms, (incident.closed_ms or incident.opened_ms) + 1
                )
            self._publish(closed)
            self.incident_ids.pop(id(incident), None)

    def _detail(self, incident: Incident, result: WindowResult, scope: ScopeState) -> dict:
        return {
            "source": "models",
            "bundle": f"{scope.name} v{scope.version}",
            "ratio": round(result.step.ratio, 4),
            "peak_ratio": round(incident.peak_ratio, 4),
            "iforest": round(result.iforest, 6),
            "autoencoder": round(result.autoencoder, 6),
            "ratios": {n: round(v, 4) for n, v in result.all_ratios.items()},
            "windows": incident.windows,
            "top_features": [[f, round(v, 3)] for f, v in incident.top_features()],
            "top_channels": incident.top_channels(),
        }

    def _publish(self, alert: Alert | AlertChange) -> None:
        if self.publish_alert is not None:
            self.publish_alert(alert)

    async def _drift(self, device: str, end_ms: int, changes: list[str], scope: ScopeState) -> None:
        """A scored window's drift changes (maybe none: quiet windows close a drift alert). One
        drift alert opens per device at a time, and only an opening may start a retraining."""
        self.stats.drift_events += len(changes)
        opened = await self.drift_alerts.window(device, end_ms, changes, f"{scope.name} v{scope.version}")
        if opened is not None and self.settings.retrain_on_drift and scope.training is None:
            self._start_training(scope, f"drift in {opened}")

    async def _check_labels(self) -> None:
        now = time.monotonic()
        if now < self.next_label_check:
            return
        self.next_label_check = now + LABEL_CHECK_S
        try:
            await self._read_labels()
        except StoreFault:
            pass  # the store is degraded: labels are read once it answers again

    async def _read_labels(self) -> None:
        if self.last_label is None:  # start: labels given before this run already moved the thresholds
            for name, value in (await self.store.threshold_multipliers()).items():
                if name in self.scopes:
                    self._set_multiplier(self.scopes[name], value)
            self.last_label = await self.store.last_label_id()
            return
        rows = await self.store.labels_after(self.last_label)
        lo, hi = self.settings.multiplier_bounds
        for label_id, _alert, device, label in rows:
            self.last_label = label_id
            scope = self.scopes.get(self.scope_of.get(device, ""))
            if scope is None or label not in ("true_positive", "false_positive", "missed"):
                continue
            scope.adapter.settings = FeedbackSettings(
                min_precision=self.settings.min_precision, min_recall=self.settings.min_recall, lowest=lo, highest=hi
            )
            change = scope.adapter.add(label)
            if change is not None:
                old, new, reason = change
                log.warning("%s: threshold multiplier %.3f -> %.3f (%s)", scope.name, old, new, reason)
                await self.store.record_threshold_change(scope.name, old, new, reason)
                self._set_multiplier(scope, new)

    def _set_multiplier(self, scope: ScopeState, value: float) -> None:
        scope.adapter.multiplier = value
        for device in scope.devices:
            if device in self.detectors:
                self.detectors[device].multiplier = value

    def detail(self) -> dict:
        """More than status(), for the dashboard: each scope's bundle and each device's
        detection state (open incident, drift tests)."""
        scopes = {}
        for name, s in self.scopes.items():
            manifest = s.scorer.manifest if s.scorer is not None else None
            scopes[name] = {
                "devices": s.devices,
                "version": s.version,
                "collected": len(s.collected),
                "training": s.training is not None,
                "multiplier": s.adapter.multiplier,
                "probation": s.probation,
                "source": manifest.training.get("source") if manifest else None,
                "created": manifest.created if manifest else None,
                "rolled_back": self.models.rolled_back(name),
            }
        devices = {}
        for device, scope in self.scope_of.items():
            detector = self.detectors.get(device)
            history = self.scores.get(device)
            devices[device] = {
                "scope": scope,
                "incident_open": detector is not None and detector.rules.incident is not None,
                "drift": detector.drift_levels() if detector is not None else {},
                "windows_kept": len(history) if history is not None else 0,
            }
        return {
            "scopes": scopes,
            "devices": devices,
            "critical_ratio": self.settings.critical_ratio,
            "drift_threshold": self.settings.drift_threshold,
        }

    def status(self) -> dict:
        return {
            "windows": self.stats.windows,
            "scored": self.stats.scored,
            "dropped": self.stats.dropped,
            "errors": self.stats.errors,
            "incidents": self.stats.incidents,
            "trainings": self.stats.trainings,
            "drift_events": self.stats.drift_events,
            "models": {
                name: {
                    "version": s.version,
                    "collected": len(s.collected),
                    "training": s.training is not None,
                    "multiplier": s.adapter.multiplier,
                }
                for name, s in self.scopes.items()
            },
        }
