"""Operator feedback moving a threshold within bounds (seed: precision below 80% raises it,
recall below 95% lowers it). Pure logic; the caller stores labels and logs every change.

Over the last `window` labelled alerts: precision = true / (true + false positives); recall =
true / (true + missed), where *missed* are anomalies an operator reported that raised no alert.
Each evaluation moves the threshold multiplier by one `step` at most, never outside
[`lowest`, `highest`]; precision wins when both are low (fewer false alarms first).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

LABELS = ("true_positive", "false_positive", "missed")


@dataclass
class FeedbackSettings:
    min_precision: float = 0.80
    min_recall: float = 0.95
    step: float = 1.10  # multiplicative
    lowest: float = 0.7
    highest: float = 2.0
    window: int = 20  # labels considered
    min_labels: int = 5  # no change on less evidence


@dataclass
class ThresholdAdapter:
    settings: FeedbackSettings = field(default_factory=FeedbackSettings)
    multiplier: float = 1.0
    labels: deque = field(default_factory=deque)

    def add(self, label: str) -> tuple[float, float, str] | None:
        """Record a label; returns (old, new multiplier, reason) when the threshold moves."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {', '.join(LABELS)}")
        self.labels.append(label)
        while len(self.labels) > self.settings.window:
            self.labels.popleft()
        if len(self.labels) < self.settings.min_labels:
            return None
        tp = self.labels.count("true_positive")
        fp = self.labels.count("false_positive")
        missed = self.labels.count("missed")
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + missed) if tp + missed else 1.0
        old = self.multiplier
        if precision < self.settings.min_precision:
            new, reason = (
                min(self.settings.highest, old * self.settings.step),
                f"precision {precision:.0%} below {self.settings.min_precision:.0%}",
            )
        elif recall < self.settings.min_recall:
            new, reason = (
                max(self.settings.lowest, old / self.settings.step),
                f"recall {recall:.0%} below {self.settings.min_recall:.0%}",
            )
        else:
            return None
        if new == old:
            return None
        self.multiplier = new
        return old, new, reason
