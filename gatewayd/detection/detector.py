"""One device's detector: a bundle's models, the alert rules and drift watch, window by window.

Each score becomes a ratio that is 0 at its typical calibration score and 1 at its alarm
level: (score - typical) / (multiplier x (level - typical)), the level being where the
device's own calibration windows put the false-alarm budget (models/calibration.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gatewayd.models.bundle import Manifest
from gatewayd.models.calibration import Tail, window_alpha
from gatewayd.models.scorer import Scorer

from .baseline import Baseline
from .drift import PageHinkley
from .rules import SCORE_NAMES as SCORES
from .rules import AlertRules, RuleSettings, Step


@dataclass(frozen=True)
class DriftSettings:
    enabled: bool = True
    delta: float = 0.5
    threshold: float = 50.0
    min_samples: int = 60


# Bundles of format 1 (no calibration) keep the margins they were evaluated with.
LEGACY_MARGINS = {"iforest": 2.5, "autoencoder": 5.5}


def score_tails(manifest: Manifest) -> dict[str, Tail]:
    """Each score's calibration; for a format 1 bundle, one equivalent to its old alarm level
    (typical + margin x (threshold - typical)) whatever the budget."""
    m = manifest.models
    tails: dict[str, Tail] = {}
    for name, entry in (("iforest", m.iforest), ("autoencoder", m.autoencoder)):
        if entry.calibration is not None:
            tails[name] = Tail(**entry.calibration.model_dump())
        else:
            assert entry.threshold is not None and entry.typical is not None
            level = entry.typical + LEGACY_MARGINS[name] * (entry.threshold - entry.typical)
            tails[name] = Tail(entry.typical, level, 1e-300, 1)  # a tail too thin to move the level
    if m.pca is not None:
        tails["pca_t2"] = Tail(**m.pca.t2.model_dump())
        tails["pca_q"] = Tail(**m.pca.q.model_dump())
    return tails


@dataclass
class WindowResult:
    end_ms: int
    iforest: float
    autoencoder: float
    ratios: np.ndarray  # of the scores that decide (Detector.names)
    step: Step
    top_features: list[tuple[str, float]]
    drift: list[str] = field(default_factory=list)  # "score up", "pressure:mean down", ...
    all_ratios: dict[str, float] = field(default_factory=dict)  # every score's ratio, deciding or not


class Detector:
    def __init__(
        self,
        device: str,
        scorer: Scorer,
        rules: RuleSettings,
        drift: DriftSettings = DriftSettings(),
        multiplier: float = 1.0,
    ):
        self.device = device
        self.scorer = scorer
        self.rules = AlertRules(device, rules)
        self.multiplier = multiplier
        self.drift_settings = drift
        self.tails = score_tails(scorer.manifest)
        wanted = [n for n in rules.scores if n in self.tails]
        # A bundle without the configured scores (format 1 has no PCA) decides on what it has.
        self.names = tuple(wanted) if wanted else tuple(n for n in SCORES if n in self.tails)
        self.available = tuple(n for n in SCORES if n in self.tails)
        self.typical = np.array([self.tails[n].typical for n in self.available])
        alpha = window_alpha(rules.false_alarms_per_day, scorer.spec.hop_s)
        levels = np.array([self.tails[n].level(alpha) for n in self.available])
        self.deciding = np.array([self.available.index(n) for n in self.names])
        # the span never vanishes: a score that was constant in calibration alarms when it moves
        self.span = np.maximum(levels - self.typical, 1e-9 * np.maximum(np.abs(levels), 1.0))
        self.baseline = Baseline(
            scorer.scaler_for(device).mean, rules.follow_windows, scorer.spec.window_s, scorer.spec.hop_s
        )
        names = scorer.spec.names
        self.mean_features = [i for i, n in enumerate(names) if n.endswith(":mean")]
        self.drifts = {"score": PageHinkley(drift.delta, drift.threshold, drift.min_samples)}
        for i in self.mean_features:
            self.drifts[names[i]] = PageHinkley(drift.delta, drift.threshold, drift.min_samples)

    def replace_scorer(self, scorer: Scorer) -> None:
        """A new bundle takes over; the incident state and hysteresis counts carry on."""
        rules = self.rules
        self.__init__(self.device, scorer, rules.settings, self.drift_settings, self.multiplier)  # type: ignore[misc]
        self.rules = rules

    def alarm_levels(self) -> dict[str, float]:
        """Each score's level at which its ratio reaches 1; feedback moves it with the multiplier."""
        return {n: float(t + self.multiplier * s) for n, t, s in zip(self.available, self.typical, self.span)}

    def drift_levels(self) -> dict[str, float | None]:
        """Each watched stream's progress towards a drift alert (1.0 raises it); None while measuring."""
        return {name: test.level() for name, test in self.drifts.items()}

    def all_ratios(self, named: dict[str, np.ndarray]) -> np.ndarray:
        """Every available score's ratio, in `available` order, for one window's scores."""
        values = np.array([float(named[n][0]) for n in self.available])
        return (values - self.typical) / (self.multiplier * self.span)

    def ratios(self, named: dict[str, np.ndarray]) -> np.ndarray:
        """The deciding scores' ratios for one window's scores."""
        return self.all_ratios(named)[self.deciding]

    def window(self, end_ms: int, features: np.ndarray) -> WindowResult:
        """Score one closed window against the baseline and step the rules."""
        scores = self.scorer.score(self.baseline.shift(features), self.device)
        if_score, ae_score = float(scores.iforest[0]), float(scores.autoencoder[0])
        every = self.all_ratios(scores.named)
        ratios = every[self.deciding]
        excess = scores.feature_error[0] / np.maximum(self.scorer.feature_thresholds, 1e-12) - 1.0
        names = self.scorer.spec.names
        feature_excess = {names[i]: float(excess[i]) for i in np.flatnonzero(excess > 0)}
        step = self.rules.step(end_ms, ratios, feature_excess, incomplete=bool(np.isnan(features).any()))
        self.baseline.follow(features, step.ratio, step.incident_open)
        top = self.scorer.top_features(scores.feature_error[0])
        result = WindowResult(
            end_ms, if_score, ae_score, ratios, step, top, all_ratios=dict(zip(self.available, map(float, every)))
        )
        if self.drift_settings.enabled:
            direction = self.drifts["score"].update(step.ratio)
            if direction:
                result.drift.append(f"score {direction}")
            z = self.scorer.scaler_for(self.device).transform(np.atleast_2d(features))[0]
            for i in self.mean_features:
                direction = self.drifts[names[i]].update(float(z[i]))
                if direction:
                    result.drift.append(f"{names[i]} {direction}")
        return result
