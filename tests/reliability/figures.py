"""Figures the reliability suites measure (inputs fuzzed, kills survived, faults injected...).

Tests add to named counters; at the end of the session the counters and the outcome of every
reliability test are written to the JSON file named by HUB_RELIABILITY_FIGURES (under the key
HUB_RELIABILITY_VARIANT, default "default"), which `python -m tests.reliability.report` turns
into the figures table of docs/reliability.md. Without the variable nothing is written.
"""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path


class Figures:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.failed: list[str] = []

    def add(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def record_outcome(self, nodeid: str, outcome: str) -> None:
        self.outcomes[outcome] += 1
        if outcome == "failed":
            self.failed.append(nodeid)

    def write(self) -> Path | None:
        target = os.environ.get("HUB_RELIABILITY_FIGURES")
        if not target:
            return None
        path = Path(target)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[os.environ.get("HUB_RELIABILITY_VARIANT", "default")] = {
            "generated_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
            "outcomes": dict(sorted(self.outcomes.items())),
            "failed": sorted(self.failed),
            "figures": dict(sorted(self.counters.items())),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return path


FIGURES = Figures()  # one per pytest session (the process)
