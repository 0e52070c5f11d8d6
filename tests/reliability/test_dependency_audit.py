"""The offline dependency audit (issue 9): OSV range semantics, the allowlist with expiry, a
vulnerable lock failing, and the CI gate itself: the committed lock matches the venv and passes
against the committed advisory snapshot."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from tools.dep_audit import (
    ALLOWLIST,
    LOCK,
    SNAPSHOT,
    AuditInputError,
    audit,
    in_range,
    installed_closure,
    is_affected,
    load_allowlist,
    load_snapshot,
    lock_drift,
    main,
    parse_lock,
    refresh,
    render_lock,
)

TODAY = dt.date(2026, 6, 1)


def _events(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{kind: value} for kind, value in pairs]


# --- range semantics ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected"),
    [("0.1", True), ("3.7.3", True), ("3.7.4", False), ("3.7.4.post0", False), ("4.0", False)],
)
def test_introduced_zero_fixed_is_exclusive(version: str, expected: bool) -> None:
    assert in_range(version, _events(("introduced", "0"), ("fixed", "3.7.4"))) is expected


@pytest.mark.parametrize(
    ("version", "expected"), [("1.8.2", False), ("1.9", True), ("2.2.2", True), ("2.3", False)]
)
def test_introduced_is_inclusive(version: str, expected: bool) -> None:
    assert in_range(version, _events(("introduced", "1.9"), ("fixed", "2.3"))) is expected


@pytest.mark.parametrize(
    ("version", "expected"),
    [("3.8.4", True), ("3.8.4.post1", False), ("3.8.5", False), ("0.22.0b6", True)],
)
def test_last_affected_is_inclusive(version: str, expected: bool) -> None:
    assert in_range(version, _events(("introduced", "0"), ("last_affected", "3.8.4"))) is expected


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1.26.17", True),
        ("1.26.18", False),
        ("1.26.20", False),
        ("2.0.0", True),
        ("2.0.6", True),
        ("2.0.7", False),
        ("2.8.0", False),
    ],
)
def test_backported_fixes_in_one_range(version: str, expected: bool) -> None:
    # Listed out of order on purpose, as in PYSEC-2023-212 (urllib3): evaluation sorts them.
    events = _events(
        ("introduced", "2.0.0"), ("fixed", "2.0.7"), ("introduced", "0"), ("fixed", "1.26.18")
    )
    assert in_range(version, events) is expected


@pytest.mark.parametrize(
    ("events", "version", "expected"),
    [
        ((("introduced", "0"), ("fixed", "3.9.0")), "3.9.0rc0", True),
        ((("introduced", "0"), ("fixed", "3.9.0")), "3.9.0b1", True),
        ((("introduced", "0"), ("fixed", "3.9.0")), "3.9.0.dev1", True),
        ((("introduced", "5.1"), ("fixed", "5.2b1")), "5.1rc1", False),
        ((("introduced", "5.1"), ("fixed", "5.2b1")), "5.2a1", True),
        ((("introduced", "5.1"), ("fixed", "5.2b1")), "5.2b1", False),
        ((("introduced", "5.1"), ("fixed", "5.2b1")), "5.2", False),
        ((("introduced", "2.0.0rc1"), ("fixed", "2.0.1")), "2.0.0b1", False),
        ((("introduced", "2.0.0rc1"), ("fixed", "2.0.1")), "2.0.0rc1", True),
    ],
)
def test_pre_releases_order_as_pep_440(
    events: tuple[tuple[str, str], ...], version: str, expected: bool
) -> None:
    assert in_range(version, _events(*events)) is expected


def test_open_range_and_limit() -> None:
    assert in_range("99.0", _events(("introduced", "0")))  # no fix known: all versions
    assert not in_range("2.0", _events(("introduced", "1.0"), ("limit", "2.0")))


def test_explicit_versions_list() -> None:
    advisory = {"versions": ["1.0", "0.1-bulbasaur", "2.0.0rc1"]}
    assert is_affected("1.0.0", advisory)  # PEP 440 equality, not string equality
    assert is_affected("0.1-bulbasaur", advisory)  # pre-PEP 440 names compare as text
    assert is_affected("2.0.0rc1", advisory)
    assert not is_affected("1.1", advisory)
    assert not is_affected("2.0.0", advisory)
    # Ranges and lists are alternatives: either one is enough.
    both = {"ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "3"}]}], **advisory}
    assert is_affected("3.1", both) and is_affected("1.0", both)


def test_git_ranges_are_ignored_and_bad_events_rejected() -> None:
    git_only = {"ranges": [{"type": "GIT", "events": [{"introduced": "0"}]}]}
    assert not is_affected("1.0", git_only)
    with pytest.raises(AuditInputError):
        in_range("1.0", [{"introduced": "0"}, {"patched": "2"}])


# --- allowlist and audit --------------------------------------------------------------------

SNAPSHOT_DEMO = {
    "schema": "audience-hub/advisory-snapshot/1",
    "checked_packages": ["demo-lib", "other"],
    "advisories": [
        {
            "id": "PYSEC-9999-1",
            "package": "demo-lib",
            "aliases": ["CVE-9999-0001"],
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}],
        },
        {
            "id": "PYSEC-9999-2",
            "package": "demo-lib",
            "aliases": [],
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0"}]}],
        },
    ],
}


def _allowlist(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "allowlist.yaml"
    path.write_text(body)
    return path


def test_live_allowlist_entry_covers_by_alias(tmp_path: Path) -> None:
    entries = load_allowlist(
        _allowlist(
            tmp_path,
            "entries:\n  - id: CVE-9999-0001\n    reason: not reachable\n    expires: 2026-12-31\n",
        )
    )
    result = audit({"demo-lib": "1.5"}, SNAPSHOT_DEMO, entries, TODAY)
    assert result.ok
    assert [f.id for f in result.allowed] == ["PYSEC-9999-1"]
    assert result.allowed[0].allowed_by is not None


def test_expired_allowlist_entry_fails(tmp_path: Path) -> None:
    entries = load_allowlist(
        _allowlist(
            tmp_path,
            "entries:\n  - id: PYSEC-9999-1\n    reason: was fine\n    expires: 2026-05-31\n",
        )
    )
    result = audit({"demo-lib": "1.5"}, SNAPSHOT_DEMO, entries, TODAY)
    assert not result.ok
    assert [f.id for f in result.findings] == ["PYSEC-9999-1"]  # no longer suppressed
    assert [e.id for e in result.expired] == ["PYSEC-9999-1"]
    # An expired entry fails even when nothing it named is installed any more.
    clean = audit({"demo-lib": "2.0"}, SNAPSHOT_DEMO, entries, TODAY)
    assert not clean.findings and clean.expired and not clean.ok
    # Valid through its expiry day.
    assert audit({"demo-lib": "1.5"}, SNAPSHOT_DEMO, entries, dt.date(2026, 5, 31)).ok


@pytest.mark.parametrize(
    "body",
    [
        "entries:\n  - id: PYSEC-9999-1\n    expires: 2026-12-31\n",  # no reason
        "entries:\n  - id: PYSEC-9999-1\n    reason: x\n",  # no expiry
        "entries:\n  - id: PYSEC-9999-1\n    reason: x\n    expires: someday\n",
    ],
)
def test_allowlist_entries_need_id_reason_and_expiry(tmp_path: Path, body: str) -> None:
    with pytest.raises(AuditInputError):
        load_allowlist(_allowlist(tmp_path, body))


def test_unchecked_package_fails() -> None:
    result = audit({"demo-lib": "2.0", "never-looked-up": "1.0"}, SNAPSHOT_DEMO, (), TODAY)
    assert result.unchecked == ["never-looked-up"] and not result.ok


def test_synthetic_vulnerable_lock_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old versions of real dependencies against the committed snapshot: the CLI exits 1 and
    names the advisory, the installed version and the fix."""
    real = parse_lock(LOCK.read_text())
    old = {**real, "aiohttp": "3.8.4", "pillow": "9.2.0", "urllib3": "1.26.17"}
    lock = tmp_path / "requirements.lock"
    lock.write_text(render_lock(old) + "\n")
    empty = _allowlist(tmp_path, "entries: []\n")
    code = main(["--lock", str(lock), "audit", "--allowlist", str(empty)])
    out = capsys.readouterr().out
    assert code == 1 and "FAILED" in out
    found = set(re.findall(r"^VULNERABLE (\S+)", out, flags=re.MULTILINE))
    assert {"PYSEC-2023-120", "PYSEC-2024-24", "PYSEC-2022-42980", "PYSEC-2023-212"} <= found
    assert "PYSEC-2022-43059" not in found  # withdrawn upstream: not in the snapshot
    assert "PYSEC-2023-192" not in found  # urllib3 1.26.17 is that one's fix
    assert re.search(r"^VULNERABLE PYSEC-2022-42980 .*pillow 9\.2\.0 fixed: 9\.3\.0$", out, re.M)


# --- refresh from a local advisory source ---------------------------------------------------


def test_refresh_from_pypa_checkout_and_osv_export(tmp_path: Path) -> None:
    vulns = tmp_path / "db" / "vulns" / "demo-lib"
    vulns.mkdir(parents=True)
    (vulns / "PYSEC-9999-10.yaml").write_text(
        "id: PYSEC-9999-10\naliases: [CVE-9999-0010]\naffected:\n- package: {name: demo-lib,"
        " ecosystem: PyPI}\n  ranges:\n  - type: GIT\n    events: [{introduced: '0'}, {fixed: ab}]"
        "\n  - type: ECOSYSTEM\n    events: [{introduced: '0'}, {fixed: 1.4.2}]\n"
        "  versions: ['1.0', '1.4.1']\nseverity:\n- {type: CVSS_V3, score: 'CVSS:3.1/AV:N'}\n"
    )
    (vulns / "PYSEC-9999-11.yaml").write_text(  # the older PyPA layout
        "id: PYSEC-9999-11\npackage: {name: demo-lib, ecosystem: PyPI}\naffects:\n  ranges:\n"
        "  - type: ECOSYSTEM\n    fixed: '0.9'\n  - type: ECOSYSTEM\n    introduced: '1.2'\n"
        "    fixed: 1.2.5\n  - type: ECOSYSTEM\n    introduced: '1.9'\n    fixed: 1.10\n"
    )
    (vulns / "PYSEC-9999-12.yaml").write_text(
        "id: PYSEC-9999-12\nwithdrawn: '2024-01-01'\naffected:\n- package: {name: demo-lib}\n"
        "  ranges:\n  - type: ECOSYSTEM\n    events: [{introduced: '0'}]\n"
    )
    snap = refresh(tmp_path / "db", ["demo-lib", "other"], commit="f" * 40)
    assert snap["source"]["commits"] == ["f" * 40]
    assert snap["checked_packages"] == ["demo-lib", "other"]
    by_id = {a["id"]: a for a in snap["advisories"]}
    assert set(by_id) == {"PYSEC-9999-10", "PYSEC-9999-11"}
    assert by_id["PYSEC-9999-10"]["fixed"] == ["1.4.2"] and "versions" not in by_id["PYSEC-9999-10"]
    assert by_id["PYSEC-9999-10"]["severity"][0]["type"] == "CVSS_V3"
    assert [f.id for f in audit({"demo-lib": "1.2.3"}, snap, (), TODAY).findings] == [
        "PYSEC-9999-10",
        "PYSEC-9999-11",
    ]
    assert audit({"demo-lib": "1.4.2"}, snap, (), TODAY).ok
    # An unquoted `fixed: 1.10` stays the version 1.10 (a YAML float would read 1.1).
    assert [f.id for f in audit({"demo-lib": "1.9.5"}, snap, (), TODAY).findings] == [
        "PYSEC-9999-11"
    ]
    assert audit({"demo-lib": "1.10.0"}, snap, (), TODAY).ok

    export = tmp_path / "osv"
    export.mkdir()
    record = {
        "id": "GHSA-xxxx-yyyy-zzzz",
        "aliases": ["CVE-9999-0020"],
        "affected": [
            {"package": {"ecosystem": "PyPI", "name": "Demo_Lib"}, "versions": ["3.0", "3.1"]},
            {"package": {"ecosystem": "npm", "name": "demo-lib"}, "versions": ["1.0"]},
        ],
    }
    (export / "GHSA-xxxx-yyyy-zzzz.json").write_text(json.dumps(record))
    with pytest.raises(AuditInputError):  # no git checkout and no --commit: no provenance
        refresh(export, ["demo-lib"])
    osv = refresh(export, ["demo-lib"], commit="export-2026-06-01")
    assert osv["advisories"][0]["commit"] == "export-2026-06-01"
    assert [a["versions"] for a in osv["advisories"]] == [["3.0", "3.1"]]
    assert not audit({"demo-lib": "3.1"}, osv, (), TODAY).ok


# --- the CI gate: the real lock and the committed snapshot ----------------------------------


def test_lock_matches_the_installed_closure() -> None:
    """requirements.lock is what the venv runs (`make install` installs with -c lock); a new or
    upgraded dependency makes this fail until `python -m tools.dep_audit lock` is run."""
    assert lock_drift(parse_lock(LOCK.read_text()), installed_closure()) == []


def test_snapshot_is_well_formed_with_provenance() -> None:
    snapshot = load_snapshot(SNAPSHOT)
    source = snapshot["source"]
    assert source["repo"] and source["commits"] and source["taken"]
    ids = [a["id"] for a in snapshot["advisories"]]
    assert len(ids) == len(set(ids))
    for advisory in snapshot["advisories"]:
        assert advisory["commit"] in source["commits"]
        assert advisory["package"] in snapshot["checked_packages"]
        assert advisory["ranges"] or advisory.get("versions")
        is_affected("0.0.1", advisory)  # every event version parses


def test_real_lock_passes_against_committed_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    result = audit(parse_lock(LOCK.read_text()), load_snapshot(SNAPSHOT), load_allowlist(ALLOWLIST))
    assert result.unchecked == [], "locked packages never looked up in the advisory database"
    assert [f.line() for f in result.findings] == []
    assert result.expired == []
    assert main(["audit"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("ok")
