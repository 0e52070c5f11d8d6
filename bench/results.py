"""The measurements of one harness run: runs per figure and size, skips, errors, profiles;
kept as JSON (written after every measurement, so a cut-short run still has its figures)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_EXTRA_SKIP = {
    "seconds", "records", "peak_rss_mb", "wall_seconds", "profile", "figures", "load_1m",
}  # fmt: skip


@dataclass
class Summary:
    """Median, min and max of a figure's runs at one size."""

    runs: int
    records: int
    seconds: float
    seconds_min: float
    seconds_max: float
    peak_rss_mb: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("inf")

    @property
    def rate_min(self) -> float:
        return self.records / self.seconds_max if self.seconds_max > 0 else float("inf")

    @property
    def rate_max(self) -> float:
        return self.records / self.seconds_min if self.seconds_min > 0 else float("inf")

    @property
    def us_per_record(self) -> float:
        return self.seconds / self.records * 1e6 if self.records else float("nan")


@dataclass
class Results:
    path: Path | None = None
    data: dict[str, Any] = field(
        default_factory=lambda: {
            "figures": {},
            "skipped": {},
            "errors": {},
            "profiles": {},
            "notes": {},
            "meta": {},
        }
    )

    # --- recording ------------------------------------------------------------------------

    def add_run(self, key: str, size: int, result: dict[str, Any]) -> None:
        entry = self.data["figures"].setdefault(key, {}).setdefault(str(size), {"runs": []})
        entry["runs"].append(
            {
                "seconds": result["seconds"],
                "records": result["records"],
                "peak_rss_mb": result.get("peak_rss_mb"),
                "load_1m": result.get("load_1m"),
                "extra": {k: v for k, v in result.items() if k not in _EXTRA_SKIP},
            }
        )
        self.save()

    def add_error(self, key: str, size: int, message: str) -> None:
        self.data["errors"].setdefault(key, {})[str(size)] = message
        self.save()

    def add_skip(self, step: str, size: int, reason: str) -> None:
        self.data["skipped"].setdefault(step, {})[str(size)] = reason
        self.save()

    def add_profile(self, key: str, size: int, text: str) -> None:
        self.data["profiles"].setdefault(key, {})[str(size)] = text
        self.save()

    def note(self, name: str, value: Any) -> None:
        self.data["notes"][name] = value
        self.save()

    def save(self) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, default=str))
            tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> Results:
        return cls(path=path, data=json.loads(path.read_text()))

    def supplement(self, other: Results, replace: bool = False) -> None:
        """Add another run's figures for (figure, size) pairs this run did not measure (with
        replace: for every pair the other run measured, e.g. a step re-measured after a
        change), and drop the skip notes they answer; the other run's command is listed in
        the report."""
        from bench.catalogue import step_of

        added: set[tuple[str, str]] = set()  # (step, size) the other run filled in
        figures = 0
        for key, per_size in other.data["figures"].items():
            mine = self.data["figures"].setdefault(key, {})
            for size, entry in per_size.items():
                if (replace or size not in mine) and entry.get("runs"):
                    mine[size] = entry
                    added.add((step_of(key), size))
                    figures += 1
        for kind in ("profiles", "notes"):
            for key, value in other.data[kind].items():
                self.data[kind].setdefault(key, value)
        for step, size in added:
            reason = self.data["skipped"].get(step, {}).get(size)
            if reason and not reason.endswith("measured by the supplementary run"):
                self.data["skipped"][step][size] = f"{reason}; measured by the supplementary run"
        measured = {(k, s) for k, per in self.data["figures"].items() for s in per}
        for key in list(self.data["errors"]):
            for size in list(self.data["errors"][key]):
                if (key, size) in measured:
                    del self.data["errors"][key][size]
        self.meta.setdefault("supplements", []).append(
            {"command": other.meta.get("command"), "started": other.meta.get("started"),
             "figures": figures, "replaced": replace}
        )  # fmt: skip

    # --- reading ---------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        return self.data["meta"]

    def sizes(self) -> list[int]:
        return sorted({int(s) for per in self.data["figures"].values() for s in per})

    def summary(self, key: str, size: int) -> Summary | None:
        runs = self.data["figures"].get(key, {}).get(str(size), {}).get("runs", [])
        if not runs:
            return None
        seconds = [r["seconds"] for r in runs]
        rss = [r["peak_rss_mb"] for r in runs if r.get("peak_rss_mb") is not None]
        return Summary(
            runs=len(runs),
            records=int(statistics.median(r["records"] for r in runs)),
            seconds=statistics.median(seconds),
            seconds_min=min(seconds),
            seconds_max=max(seconds),
            peak_rss_mb=max(rss) if rss else float("nan"),
        )

    def loads(self) -> list[float]:
        """The 1-minute load average around every run (2 cores: above 2, work competed)."""
        return [
            run["load_1m"]
            for per_size in self.data["figures"].values()
            for entry in per_size.values()
            for run in entry["runs"]
            if run.get("load_1m") is not None
        ]

    def extras(self, key: str, size: int) -> dict[str, Any]:
        runs = self.data["figures"].get(key, {}).get(str(size), {}).get("runs", [])
        return runs[-1]["extra"] if runs else {}

    def error(self, key: str, size: int) -> str | None:
        return self.data["errors"].get(key, {}).get(str(size))

    def skipped(self, step: str, size: int) -> str | None:
        return self.data["skipped"].get(step, {}).get(str(size))
