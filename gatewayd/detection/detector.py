"""One device's detector: a bundle's models, the alert rules and drift watch, window by window.

Each model's score becomes a ratio that is 0 at its typical training score and 1 at its alarm
level: (score - typical) / (margin x multiplier x (threshold - typical)); see rules.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gatewayd.models.scorer import Scorer

from .drift import PageHinkley
from .rules import AlertRules, RuleSettings, Step


@dataclass(frozen=True)
class DriftSettings:
    enabled: bool = True
    delta: float = 0.5
    threshold: float = 50.0
    min_samples: int = 60


@dataclass
class WindowResult:
    end_ms: int
    iforest: float
    autoencoder: float
    ratios: np.ndarray
    step: Step
    top_features: list[tuple[str, float]]
    drift: list[str] = field(default_factory=list)  # "score up", "pressure:mean down", ...


class Detector:
    def __init__(self, device: str, scorer: Scorer, rules: RuleSettings, drift: DriftSettings = DriftSettings(),
                 multiplier: float = 1.0):  # fmt: skip
        self.device = device
        self.scorer = scorer
        self.rules = AlertRules(device, rules)
        self.multiplier = multiplier
        self.drift_settings = drift
        m = scorer.manifest.models
        self.typical = np.array([m.iforest.typical, m.autoencoder.typical])
        self.span = np.array([m.iforest.threshold - m.iforest.typical, m.autoencoder.threshold - m.autoencoder.typical])
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

    def alarm_levels(self) -> np.ndarray:
        """Each model's score at which its ratio reaches 1; feedback moves it with the multiplier."""
        return self.typical + np.asarray(self.rules.settings.margins[:2]) * self.multiplier * self.span

    def drift_levels(self) -> dict[str, float | None]:
        """Each watched stream's progress towards a drift alert (1.0 raises it); None while measuring."""
        return {name: test.level() for name, test in self.drifts.items()}

    def ratios(self, iforest: float, autoencoder: float) -> np.ndarray:
        scale = np.asarray(self.rules.settings.margins[:2]) * self.multiplier
        return (np.array([iforest, autoencoder]) - self.typical) / (scale * self.span)

    def window(self, end_ms: int, features: np.ndarray) -> WindowResult:
        """Score one closed window and step the rules."""
        scores = self.scorer.score(features, self.device)
        if_score, ae_score = float(scores.iforest[0]), float(scores.autoencoder[0])
        ratios = self.ratios(if_score, ae_score)
        excess = scores.feature_error[0] / np.maximum(self.scorer.feature_thresholds, 1e-12) - 1.0
        names = self.scorer.spec.names
        feature_excess = {names[i]: float(excess[i]) for i in np.flatnonzero(excess > 0)}
        step = self.rules.step(end_ms, ratios, feature_excess)
        top = self.scorer.top_features(scores.feature_error[0])
        result = WindowResult(end_ms, if_score, ae_score, ratios, step, top)
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
