"""What a sync must change at the engine: compare wanted membership with what was synced.

Modes, as reverse-ETL tools name them: `upsert` adds and updates, `mirror` also removes
members who left (or lost consent), `append` only adds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

SYNC_MODES = ("upsert", "mirror", "append")


@dataclass
class SyncDiff:
    adds: list[str] = field(default_factory=list)
    updates: list[str] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    unchanged: int = 0


def payload_hash(payload: Mapping[str, object]) -> str:
    """A stable hash of a member payload (sorted keys), kept instead of the payload itself."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def diff_membership(
    wanted: Mapping[str, str], synced: Mapping[str, str], mode: str = "mirror"
) -> SyncDiff:
    """wanted/synced: person token -> payload hash. Output lists are sorted for determinism."""
    if mode not in SYNC_MODES:
        raise ValueError(f"unknown sync mode {mode!r}; expected one of {SYNC_MODES}")
    diff = SyncDiff()
    for person, wanted_hash in wanted.items():
        synced_hash = synced.get(person)
        if synced_hash is None:
            diff.adds.append(person)
        elif synced_hash != wanted_hash and mode != "append":
            diff.updates.append(person)
        else:
            diff.unchanged += 1
    if mode == "mirror":
        diff.removes = [person for person in synced if person not in wanted]
    diff.adds.sort()
    diff.updates.sort()
    diff.removes.sort()
    return diff
