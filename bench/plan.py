"""Fit the run into its time budget: project each step's cost at the next size from the
sizes already measured, keep steps by priority, then spend what is left on repeats.

Nothing is hidden: a step left out, or run fewer times than asked, is reported with why.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field

from bench.steps import Step

SAFETY = 1.15  # projections err on the slow side


@dataclass
class Budget:
    """A wall-clock deadline (None: no budget), minus a reserve for the report."""

    seconds: float | None
    reserve: float = 45.0
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float | None:
        if self.seconds is None:
            return None
        return self.started + self.seconds - self.reserve - time.monotonic()


@dataclass
class Estimator:
    """Wall seconds per step run (child start-up and setup included), by size."""

    walls: dict[str, dict[int, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def record(self, step: str, size: int, seconds: float) -> None:
        self.walls[step][size].append(seconds)

    def per_run(self, step: Step, size: int) -> float | None:
        """Projected seconds for one run of `step` at `size` (None: nothing to go by)."""
        seen = self.walls.get(step.name, {})
        if seen.get(size):
            return statistics.median(seen[size])
        points = sorted((s, statistics.median(w)) for s, w in seen.items() if w and s < size)
        if not points:
            return None
        if step.fixed_cost:
            return points[-1][1] * SAFETY
        if len(points) == 1:
            s1, t1 = points[0]
            return t1 * (size / s1) ** step.growth * SAFETY
        (s1, t1), (s2, t2) = points[-2:]
        slope = max(0.0, (t2 - t1) / (s2 - s1))
        fixed = max(0.0, t2 - slope * s2)
        return (fixed + slope * size) * SAFETY


def plan_size(
    steps: list[Step],
    size: int,
    repeat: int,
    available: float | None,
    estimator: Estimator,
) -> tuple[dict[str, int], dict[str, str]]:
    """Runs per step at this size (0 = left out) and the reason for each reduction."""
    runs = {s.name: repeat for s in steps}
    reasons: dict[str, str] = {}
    if available is None:
        return runs, reasons
    estimates = {s.name: estimator.per_run(s, size) for s in steps}
    if any(e is None for e in estimates.values()):
        return runs, reasons  # first size: decided run by run
    kept: set[str] = set()
    spent = 0.0
    for step in sorted(steps, key=lambda s: s.priority):
        cost = estimates[step.name] or 0.0
        if not set(step.requires) <= kept:
            runs[step.name] = 0
            reasons[step.name] = f"needs {', '.join(step.requires)}, left out"
            continue
        if spent + cost > available:
            runs[step.name] = 0
            reasons[step.name] = (
                f"left out: projected {cost:,.0f} s for one run, {available - spent:,.0f} s"
                " of the time budget left"
            )
            continue
        kept.add(step.name)
        spent += cost
        runs[step.name] = 1
    # Spend what is left on repeats, cheapest first, so as many figures as possible get them.
    for extra in range(1, repeat):
        for step in sorted((s for s in steps if s.name in kept), key=lambda s: estimates[s.name]):
            cost = estimates[step.name] or 0.0
            if spent + cost <= available:
                runs[step.name] = extra + 1
                spent += cost
    for name in kept:
        if runs[name] < repeat:
            reasons[name] = f"{runs[name]} run(s) instead of {repeat}: time budget"
    return runs, reasons
