"""What each figure is: its table, role (stage, baseline, limit), label, unit, and which
baseline and limits a stage is compared with."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Spec:
    section: str
    role: str  # "stage" | "baseline" | "limit"
    label: str
    unit: str
    baselines: tuple[str, ...] = ()
    limits: tuple[str, ...] = ()
    sampled: bool = False  # measured on a fixed-size sample, not the whole data set


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    step_keys: tuple[str, ...]  # the steps (see bench/steps.py) that produce its figures
    note: str = ""
    keys: list[str] = field(default_factory=list)


_FHIR_LIMITS = ("limit.orjson", "limit.copy.fhir", "limit.cat.fhir")

SPECS: dict[str, Spec] = {
    # generate
    "generate": Spec("generate", "stage", "synthetic.generate.generate", "records",
                     limits=("limit.write_bytes",)),
    "limit.write_bytes": Spec("generate", "limit", "write the same bytes, 1 MB chunks", "records"),
    # FHIR
    "ingest.fhir.fast": Spec("fhir", "stage", "ingest, fast mode (parse, protect, COPY)",
                             "resources", ("baseline.fhir_resources",), _FHIR_LIMITS),
    "ingest.fhir.strict": Spec("fhir", "stage", "ingest, strict mode", "resources",
                               ("baseline.fhir_resources",), _FHIR_LIMITS, sampled=True),
    "parse.fhir.fast": Spec("fhir", "stage", "connector only, fast mode (no protection, no DB)",
                            "resources", ("baseline.fhir_resources",),
                            ("limit.orjson", "limit.read.fhir")),
    "parse.fhir.strict": Spec("fhir", "stage", "connector only, strict mode", "resources",
                              ("baseline.fhir_resources",), ("limit.orjson",), sampled=True),
    "baseline.fhir_resources": Spec("fhir", "baseline",
                                    "orjson + one fhir.resources R4B model per resource",
                                    "resources", sampled=True),
    "limit.orjson": Spec("fhir", "limit", "orjson.loads of every NDJSON line", "resources"),
    "limit.read.fhir": Spec("fhir", "limit", "read the bytes in Python, 1 MB chunks", "resources"),
    "limit.cat.fhir": Spec("fhir", "limit", "cat FILES > /dev/null", "resources"),
    "limit.copy.fhir": Spec("fhir", "limit", "PostgreSQL COPY of the rows ingest wrote",
                            "resources"),
    # HL7
    "ingest.hl7": Spec("hl7", "stage", "ingest (frame, fast parse, map, protect, COPY)",
                       "messages", ("baseline.hl7apy", "baseline.python_hl7"),
                       ("limit.copy.hl7", "limit.cat.hl7")),
    "parse.hl7": Spec("hl7", "stage", "connector only (no protection, no DB)", "messages",
                      ("baseline.hl7apy", "baseline.python_hl7"), ("limit.read.hl7",)),
    "baseline.hl7apy": Spec("hl7", "baseline",
                            "hl7apy.parser.parse_message per message (parse only)",
                            "messages", sampled=True),
    "baseline.python_hl7": Spec("hl7", "baseline", "python-hl7 hl7.parse per message",
                                "messages", sampled=True),
    "limit.read.hl7": Spec("hl7", "limit", "read the bytes in Python, 1 MB chunks", "messages"),
    "limit.cat.hl7": Spec("hl7", "limit", "cat FILES > /dev/null", "messages"),
    "limit.copy.hl7": Spec("hl7", "limit", "PostgreSQL COPY of the rows ingest wrote",
                           "messages"),
    # CRM
    "ingest.crm": Spec("crm", "stage", "ingest (mapped read, protect, COPY)", "rows",
                       ("baseline.pandas", "baseline.polars"),
                       ("limit.copy.crm", "limit.cat.crm")),
    "parse.crm": Spec("crm", "stage", "connector only (read_crm, no protection, no DB)", "rows",
                      ("baseline.pandas", "baseline.polars"), ("limit.read.crm",)),
    "baseline.pandas": Spec("crm", "baseline", "pandas.read_csv (all text)", "rows"),
    "baseline.polars": Spec("crm", "baseline", "polars.read_csv (all text)", "rows"),
    "limit.read.crm": Spec("crm", "limit", "read the bytes in Python, 1 MB chunks", "rows"),
    "limit.cat.crm": Spec("crm", "limit", "cat FILES > /dev/null", "rows"),
    "limit.copy.crm": Spec("crm", "limit", "PostgreSQL COPY of the rows ingest wrote", "rows"),
    # loading
    "load.copy_rows": Spec("load", "stage", "COPY of landed rows (the loader's write path)",
                           "rows", ("baseline.insert_rows",), sampled=True),
    "baseline.insert_rows": Spec("load", "baseline", "one INSERT per row, one transaction",
                                 "rows", sampled=True),
    # protect
    "protect.records": Spec("protect", "stage", "Protector.protect on parsed records",
                            "records"),
    "protect.tokens": Spec("protect", "stage", "tokens made (HMAC-SHA256)", "tokens",
                           limits=("limit.hmac_digest", "limit.hmac_stdlib",
                                   "limit.hmac_cryptography")),
    "protect.vault": Spec("protect", "stage", "vault encryptions (AES-256-GCM)",
                          "encryptions", limits=("limit.aesgcm",)),
    "ingest.protected": Spec("protect", "stage",
                             "ingest of all sources with protection (bench.protection_overhead)",
                             "records", ("ingest.unprotected",)),
    "ingest.unprotected": Spec("protect", "baseline",
                               "the same ingest, crypto replaced by plain string work",
                               "records"),
    "limit.hmac_stdlib": Spec("protect", "limit",
                              "HMAC-SHA256, hmac.new(...).hexdigest() (one call each)",
                              "tokens"),
    "limit.hmac_digest": Spec("protect", "limit",
                              "HMAC-SHA256, one-shot hmac.digest(...) (one call each)",
                              "tokens"),
    "limit.hmac_cryptography": Spec("protect", "limit",
                                    "HMAC-SHA256, cryptography (one call each)", "tokens"),
    "limit.aesgcm": Spec("protect", "limit",
                         "AES-256-GCM encrypt, cryptography, fresh nonce (one call each)",
                         "encryptions"),
    # identity
    "resolve": Spec("identity", "stage", "services.identity.resolve_persons", "subjects",
                    limits=("limit.read_keys",)),
    "limit.read_keys": Spec("identity", "limit",
                            "PostgreSQL streaming every identity key once, in key order",
                            "subjects"),
    # dbt
    "dbt.full": Spec("dbt", "stage", "dbt build --full-refresh", "landing rows",
                     limits=("limit.read_landing",)),
    "dbt.incremental": Spec("dbt", "stage", "dbt build after a 1% delivery", "landing rows",
                            ("dbt.full",), ("limit.read_landing",)),
    "limit.read_landing": Spec("dbt", "limit", "PostgreSQL count(*) of every landing table",
                               "landing rows"),
    # sync
    "sync.full": Spec("sync", "stage", "diff sync, first run (everyone is an add)",
                      "members", ("baseline.repush",), ("limit.push",)),
    "sync.incremental": Spec("sync", "stage", "diff sync after 1% of people changed",
                             "members", ("baseline.repush",)),
    "baseline.repush": Spec("sync", "baseline",
                            "full re-push: consent gate + decrypt + push all, no diff",
                            "members"),
    "limit.push": Spec("sync", "limit",
                       "a fresh engine taking as many new members, built in memory",
                       "members"),
    # events
    "events.readback": Spec("events", "stage", "services.feedback.read_feedback", "events",
                            limits=("limit.copy.events",)),
    "limit.copy.events": Spec("events", "limit", "PostgreSQL COPY of the same event rows",
                              "events"),
    "events.extract": Spec("events", "stage",
                           "read_feedback from a sealed NDJSON tracking extract of them",
                           "events", limits=("limit.copy.events",)),
}  # fmt: skip

SECTIONS: list[Section] = [
    Section("generate", "Generate", ("generate", "source_limits")),
    Section("fhir", "Ingest: FHIR R4 NDJSON", ("ingest", "parse", "samples", "source_limits",
                                               "db_limits", "ingest_strict")),
    Section("hl7", "Ingest: HL7 v2", ("ingest", "parse", "samples", "source_limits",
                                      "db_limits")),
    Section("crm", "Ingest: CRM CSV", ("ingest", "parse", "source_limits", "db_limits")),
    Section("load", "PostgreSQL write path: row-by-row INSERT versus COPY", ("db_limits",)),
    Section("protect", "Protect: tokens and vault encryptions", ("protect", "crypto")),
    Section("identity", "Identity resolution", ("resolve",)),
    Section("dbt", "dbt build", ("dbt_full", "dbt_incremental", "db_limits")),
    Section("sync", "Sync to the SANDBOX engine over HTTPS", ("sync_full", "sync_incremental",
                                                               "sync_repush")),
    Section("events", "Events readback", ("events",)),
]  # fmt: skip

for _section in SECTIONS:
    _section.keys.extend(k for k, s in SPECS.items() if s.section == _section.key)


_STEP_OF = {
    "generate": "generate", "limit.write_bytes": "source_limits", "limit.orjson": "source_limits",
    "parse.fhir.fast": "parse", "parse.hl7": "parse", "parse.crm": "parse",
    "baseline.pandas": "parse", "baseline.polars": "parse",
    "parse.fhir.strict": "samples", "baseline.fhir_resources": "samples",
    "baseline.hl7apy": "samples", "baseline.python_hl7": "samples",
    "ingest.fhir.fast": "ingest", "ingest.hl7": "ingest", "ingest.crm": "ingest",
    "ingest.fhir.strict": "ingest_strict", "baseline.insert_rows": "db_limits",
    "load.copy_rows": "db_limits", "limit.read_landing": "db_limits", "resolve": "resolve",
    "limit.read_keys": "resolve",
    "dbt.full": "dbt_full", "dbt.incremental": "dbt_incremental", "sync.full": "sync_full",
    "sync.incremental": "sync_incremental", "baseline.repush": "sync_repush",
    "limit.push": "sync_repush",
    "events.readback": "events", "limit.copy.events": "events", "events.extract": "events",
    "ingest.protected": "protection_overhead", "ingest.unprotected": "protection_overhead",
}  # fmt: skip


def step_of(key: str) -> str:
    """The harness step (bench/steps.py) that measures a figure."""
    if key in _STEP_OF:
        return _STEP_OF[key]
    if key.startswith(("limit.cat.", "limit.read.")):
        return "source_limits"
    if key.startswith("limit.copy."):
        return "db_limits"
    if key.startswith("protect."):
        return "protect"
    return "crypto"  # limit.hmac_*, limit.aesgcm
