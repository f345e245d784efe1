"""Learning from history: success rates per (failure class, strategy) rank and calibrate candidates.

The rates are folded from the event history (the `heals` view counts heal.validated and heal.rejected
per class and strategy), so a replay gives the same ranking. A strategy's own confidence is the prior;
each validation outcome moves it, with `PRIOR_WEIGHT` outcomes' worth of trust in the prior:

    calibrated = (validated + PRIOR_WEIGHT * confidence) / (validated + rejected + PRIOR_WEIGHT)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from attrs import evolve, frozen

from actors.healer.strategy import Proposal
from contracts.values import FailureClass

PRIOR_WEIGHT = 4.0


@frozen(kw_only=True)
class Record:
    validated: int = 0
    rejected: int = 0


Stats = Mapping[tuple[FailureClass, str], Record]


def calibrated(confidence: float, record: Record | None) -> float:
    if record is None:
        return confidence
    total = record.validated + record.rejected
    return (record.validated + PRIOR_WEIGHT * confidence) / (total + PRIOR_WEIGHT)


def rank(proposals: Sequence[Proposal], category: FailureClass, stats: Stats) -> list[Proposal]:
    """Proposals best first, with calibrated confidences. Ties keep the strategies' own order."""
    scored = [evolve(p, confidence=round(calibrated(p.confidence, stats.get((category, p.strategy))), 4))
              for p in proposals]
    order = sorted(range(len(scored)), key=lambda i: (-scored[i].confidence, i))
    return [scored[i] for i in order]


__all__ = ["PRIOR_WEIGHT", "Record", "Stats", "calibrated", "rank"]
