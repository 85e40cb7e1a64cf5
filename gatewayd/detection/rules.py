"""From model scores to incidents: ensemble rule, hysteresis, severity, fusion. Pure logic.

Each deciding score (`scores`: the PCA's T² and Q, the autoencoder's error, the forest's
score) first becomes a ratio that is 0 at its typical calibration score and 1 at its alarm
level, typical + multiplier x (level - typical): the level is where the device's own
calibration windows put `false_alarms_per_day` (models/calibration.py), and `multiplier` is
what operator feedback has made of it (1.0 to start). The rule combines those ratios into one:

- `any`: the largest ratio (one model above its threshold is enough);
- `majority`: the median ratio, i.e. more than half of the models must be above;
- `weighted`: the weighted mean of the ratios.

A window is *alarming* when the combined ratio exceeds 1. An incident opens after `open_after`
consecutive alarming windows and closes after `close_after` consecutive quiet ones; while open,
it collects which features the autoencoder reconstructed worst (relative to their training
level) and its severity rises to critical once the combined ratio reaches `critical_ratio`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Combine = Literal["any", "majority", "weighted"]
SCORE_NAMES = ("iforest", "autoencoder", "pca_t2", "pca_q")
# Chosen by the validation protocol in bench/detection_validation.py (docs/detection.md).
DEFAULT_SCORES: tuple[str, ...] = ("pca_q",)
DEFAULT_BUDGET = 0.01  # false alarms per day, each alarming window counted as one
DEFAULT_FOLLOW_WINDOWS = 30.0  # the baseline's time constant: 300 s at 10 s windows


@dataclass(frozen=True)
class RuleSettings:
    combine: Combine = "any"
    weights: tuple[float, ...] = ()  # per deciding score, in the order of `scores`; none: equal
    scores: tuple[str, ...] = DEFAULT_SCORES
    false_alarms_per_day: float = DEFAULT_BUDGET
    open_after: int = 3
    close_after: int = 5
    critical_ratio: float = 2.0
    follow_windows: float = DEFAULT_FOLLOW_WINDOWS  # the baseline's time constant in windows (baseline.py); 0: none

    def __post_init__(self) -> None:
        if self.open_after < 1 or self.close_after < 1:
            raise ValueError("open_after and close_after must be at least 1")
        if self.critical_ratio <= 1:
            raise ValueError("critical_ratio must be above 1")
        if not self.follow_windows >= 0:
            raise ValueError("follow_windows must be zero or positive")
        if not self.false_alarms_per_day > 0:
            raise ValueError("false_alarms_per_day must be positive")
        unknown = [n for n in self.scores if n not in SCORE_NAMES]
        if unknown or not self.scores:
            raise ValueError(f"scores must be a non-empty subset of {', '.join(SCORE_NAMES)}; unknown: {unknown}")
        if self.weights and (any(w < 0 for w in self.weights) or sum(self.weights) <= 0):
            raise ValueError("weights must be non-negative with a positive sum")


def combine(ratios: np.ndarray, settings: RuleSettings) -> float:
    if settings.combine == "any":
        return float(np.max(ratios))
    if settings.combine == "majority":
        # above 1 when more than half of the ratios are: the lower median for an even count
        s = np.sort(ratios)
        return float(s[(len(s) - 1) // 2]) if len(s) % 2 else float(s[len(s) // 2 - 1])
    w = np.asarray(settings.weights[: len(ratios)], dtype=np.float64)
    if len(w) != len(ratios):  # none given, or a bundle without every configured score: equal weights
        w = np.ones(len(ratios))
    return float(np.dot(w, ratios) / w.sum())


@dataclass
class Incident:
    device: str
    opened_ms: int
    severity: str = "warning"
    closed_ms: int | None = None
    windows: int = 0
    peak_ratio: float = 0.0
    contributions: dict[str, float] = field(default_factory=dict)  # feature -> summed excess ratio
    source: str = "models"

    def top_features(self, k: int = 5) -> list[tuple[str, float]]:
        return sorted(self.contributions.items(), key=lambda kv: -kv[1])[:k]

    def top_channels(self, k: int = 3) -> list[str]:
        by_channel: dict[str, float] = {}
        for feature, value in self.contributions.items():
            channel = feature.split(":", 1)[0]
            by_channel[channel] = by_channel.get(channel, 0.0) + value
        return [c for c, _ in sorted(by_channel.items(), key=lambda kv: -kv[1])[:k]]


@dataclass
class Step:
    """What one window did: its combined ratio, whether it alarmed, and incident changes."""

    ratio: float
    alarming: bool
    opened: Incident | None = None
    escalated: Incident | None = None
    closed: Incident | None = None
    incident_open: bool = False  # an incident is open after this window


class AlertRules:
    """Hysteresis and fusion for one device (or scope)."""

    def __init__(self, device: str, settings: RuleSettings):
        self.device = device
        self.settings = settings
        self.alarming_run = 0
        self.quiet_run = 0
        self.incident: Incident | None = None

    def step(
        self, end_ms: int, ratios: np.ndarray, feature_excess: dict[str, float] | None = None, incomplete: bool = False
    ) -> Step:
        """One closed window: `ratios` are each model's score over its threshold;
        `feature_excess` maps features to how far above their training level they are.
        An `incomplete` window (a channel with no sample: a feature is scored at its training
        level) that does not alarm says nothing of the device: it never counts towards
        closing an open incident."""
        ratio = combine(np.asarray(ratios, dtype=np.float64), self.settings)
        alarming = ratio > 1.0
        step = Step(ratio, alarming)
        if alarming:
            self.alarming_run += 1
            self.quiet_run = 0
        else:
            self.alarming_run = 0
            if not (incomplete and self.incident is not None):
                self.quiet_run += 1
        incident = self.incident
        if incident is None and self.alarming_run >= self.settings.open_after:
            incident = self.incident = Incident(self.device, end_ms)
            step.opened = incident
        if incident is not None:
            if alarming:
                incident.windows += 1
                incident.peak_ratio = max(incident.peak_ratio, ratio)
                for feature, excess in (feature_excess or {}).items():
                    if excess > 0:
                        incident.contributions[feature] = incident.contributions.get(feature, 0.0) + excess
                if incident.severity == "warning" and ratio >= self.settings.critical_ratio:
                    incident.severity = "critical"
                    if step.opened is None:
                        step.escalated = incident
            if self.quiet_run >= self.settings.close_after:
                incident.closed_ms = end_ms
                step.closed = incident
                self.incident = None
        step.incident_open = self.incident is not None
        return step
