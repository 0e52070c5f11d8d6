"""The generated data set of one size: its files per source and their record counts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SOURCES = ("fhir", "hl7", "crm")


@dataclass(frozen=True)
class DataSet:
    """A generated data folder (synthetic.generate layout) and its manifest."""

    root: Path

    def manifest(self) -> dict:
        return json.loads((self.root / "manifest.json").read_text())

    def files(self, source: str) -> list[str]:
        folder = self.root / source
        return [str(p) for p in sorted(folder.iterdir()) if p.is_file()] if folder.is_dir() else []

    def records(self, source: str) -> int:
        """Input records of a source as the manifest counts them (lines, messages, rows)."""
        files = self.manifest()["files"]
        return sum(entry["records"] for path, entry in files.items() if path.startswith(source))

    def bytes(self, source: str | None = None) -> int:
        files = self.manifest()["files"]
        return sum(
            entry["bytes"]
            for path, entry in files.items()
            if source is None or path.startswith(source)
        )

    def total_records(self) -> int:
        return int(self.manifest()["totals"]["records"])
