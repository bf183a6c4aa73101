"""The Pareto front of a search's trials and the rule that picks its winner.

A trial is on the front when no other trial is at least as good in every objective and better in
one. Two rules pick the winner from the front, and each says why in a sentence that the search
records next to its choice:

- `primary`: the best primary objective; trials within `tolerance` of it count as tied, and the
  tie is broken by the other objectives in order. The tolerance is absolute for metrics bounded
  by 1 (accuracy, F1, r2, ...) and relative to the best value for the others (rmse, latency).
- `knee`: each objective is scaled to [0, 1] across the front (0 the best value on the front, 1
  the worst); the winner is the trial closest to the ideal point where every objective is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

BOUNDED = frozenset({"accuracy", "balancedAccuracy", "f1", "r2"})
"""Metrics on a 0-to-1 scale, whose tolerance is absolute."""


@dataclass(frozen=True)
class Goal:
    """One objective: a metric and whether it is maximised or minimised."""

    metric: str
    mode: str

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def badness(self, value: float) -> float:
        """The value turned so that smaller is always better."""
        return -value if self.mode == "max" else value


@dataclass(frozen=True)
class Choice:
    """The winner, the front it came from and the rule's reason."""

    winner: dict[str, Any]
    front: list[dict[str, Any]]
    rule: str
    reason: str


def values(point: dict[str, Any], goals: Sequence[Goal]) -> list[float] | None:
    """The point's objective values, or None when one is missing or not a number."""
    found = []
    for goal in goals:
        value = point.get(goal.metric)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return None
        found.append(float(value))
    return found


def dominates(a: Sequence[float], b: Sequence[float], goals: Sequence[Goal]) -> bool:
    """Whether `a` is at least as good as `b` everywhere and better somewhere."""
    pairs = list(zip(a, b, goals, strict=True))
    no_worse = all(not goal.better(y, x) for x, y, goal in pairs)
    return no_worse and any(goal.better(x, y) for x, y, goal in pairs)


def front(points: Sequence[dict[str, Any]], goals: Sequence[Goal]) -> list[dict[str, Any]]:
    """The non-dominated points, in their original order; points lacking an objective are
    left out."""
    scored = [(p, v) for p in points if (v := values(p, goals)) is not None]
    return [
        p for p, v in scored if not any(dominates(w, v, goals) for q, w in scored if q is not p)
    ]


def select(
    points: Sequence[dict[str, Any]],
    goals: Sequence[Goal],
    rule: str = "primary",
    tolerance: float = 0.0,
) -> Choice:
    """Pick the winner from the front of `points` with the named rule."""
    if not goals:
        raise ValueError("selection needs at least one objective")
    candidates = front(points, goals)
    if not candidates:
        raise ValueError(f"no point has a value for every objective ({_names(goals)})")
    if rule == "knee":
        return _knee(candidates, goals)
    if rule == "primary":
        return _primary(candidates, goals, tolerance)
    raise ValueError(f"unknown selection rule {rule!r}; use primary or knee")


def _primary(candidates: list[dict[str, Any]], goals: Sequence[Goal], tolerance: float) -> Choice:
    first = goals[0]
    best = min((float(p[first.metric]) for p in candidates), key=first.badness)
    slack = tolerance if first.metric in BOUNDED else tolerance * abs(best)
    tied = [p for p in candidates if abs(float(p[first.metric]) - best) <= slack]
    order = [*goals[1:], first]
    winner = min(tied, key=lambda p: [g.badness(float(p[g.metric])) for g in order])
    reason = f"best {first.metric} on the front is {best:.4g}"
    if len(tied) > 1 and len(goals) > 1:
        reason += (
            f"; {len(tied)} trials are within {slack:.3g} of it, and among them this one is "
            f"best by {_names(goals[1:])}"
        )
    return Choice(winner, candidates, "primary", reason)


def _knee(candidates: list[dict[str, Any]], goals: Sequence[Goal]) -> Choice:
    spans = []
    for goal in goals:
        bad = [goal.badness(float(p[goal.metric])) for p in candidates]
        spans.append((min(bad), max(bad) - min(bad)))

    def distance(point: dict[str, Any]) -> float:
        scaled = [
            (g.badness(float(point[g.metric])) - low) / span if span > 0 else 0.0
            for g, (low, span) in zip(goals, spans, strict=True)
        ]
        return math.sqrt(sum(s * s for s in scaled))

    winner = min(candidates, key=distance)
    reason = (
        f"closest of {len(candidates)} front trials to the ideal point of "
        f"{_names(goals)} scaled to [0, 1] (distance {distance(winner):.3f})"
    )
    return Choice(winner, candidates, "knee", reason)


def _names(goals: Sequence[Goal]) -> str:
    return ", ".join(f"{g.metric} ({g.mode})" for g in goals)
