"""The harness's steps for one size: what each repeat of a step measures, in which order,
and which earlier steps it needs (ingest -> resolve -> dbt -> sync -> events)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import MeasurementError, run_isolated
from bench.results import Results
from bench.stages import activate, load, model, protect, samples, source
from bench.stages.files import SOURCES, DataSet
from bench.workspace import EmbeddedServer, SandboxProcess, postgres_version


@dataclass
class Options:
    repeat: int = 3
    seed: int = 7
    fhir_sample: int = 20_000  # resources for strict mode and the fhir.resources baseline
    hl7_sample: int = 1_000  # messages for the hl7apy and python-hl7 baselines
    insert_rows: int = 20_000  # rows for row-by-row INSERT versus COPY
    crypto_calls: int = 200_000
    change_share: float = 0.01  # people changed before an incremental sync
    delta_share: float = 0.01  # patients delivered before an incremental dbt build
    dbt_args: tuple[str, ...] = ()  # extra `dbt build` arguments (the smoke run narrows it)
    dbt_incremental_args: tuple[str, ...] | None = None  # None: the same as dbt_args
    profile_steps: tuple[str, ...] | None = None  # steps given a cProfile run (None: all)
    keep: bool = False  # leave each size's data and stopped warehouse on disk

    @property
    def incremental_args(self) -> tuple[str, ...]:
        return self.dbt_args if self.dbt_incremental_args is None else self.dbt_incremental_args


@dataclass
class SizeContext:
    """Everything the steps of one size share; the warehouse and engine carry the chain."""

    size: int
    work: Path
    keyring: str
    dbt_target: str
    options: Options
    results: Results
    server: EmbeddedServer | None = None
    warehouse: Any = None
    sandbox: SandboxProcess | None = None
    destination: str | None = None
    destination_prefix: str = "bench"  # bench.remeasure: names not used on the kept warehouse
    fhir_sample_files: list[str] = field(default_factory=list)
    hl7_sample_file: str | None = None
    done: set[str] = field(default_factory=set)

    def fresh_warehouse(self, label: str):
        if self.server is None:
            self.server = EmbeddedServer(self.work / "pg")
        return self.server.fresh(label)

    def drop_warehouse(self, warehouse) -> None:
        if self.server is not None:
            self.server.drop(warehouse)

    @property
    def manifest(self) -> str:
        """The dbt manifest the bench's builds write (approvals are bound to it)."""
        return str(Path(self.dbt_target) / "manifest.json")

    @property
    def data(self) -> DataSet:
        return DataSet(self.work / "data")

    def measure(
        self, key: str | None, fn: Callable[..., dict], *args: Any, profile: bool = False
    ) -> bool:
        """One run of fn in a child; records its figure(s), or the error. True on success."""
        try:
            out = run_isolated(fn, *args, profile=profile)
        except MeasurementError as exc:
            message = str(exc)
            if "StageSkipped" in message.split("\n", 1)[0]:
                message = "not measured: " + message.split(":", 1)[1].split("\n", 1)[0].strip()
            self.results.add_error(key or fn.__name__, self.size, message)
            return False
        figures = out.pop("figures", None) or {key: out}
        for name, figure in figures.items():
            if profile:
                if out.get("profile"):
                    self.results.add_profile(name, self.size, out["profile"])
                continue
            figure.setdefault("peak_rss_mb", out.get("peak_rss_mb"))
            figure.setdefault("load_1m", out.get("load_1m"))
            self.results.add_run(name, self.size, figure)
        return True

    def close(self) -> None:
        if self.sandbox is not None:
            rss = self.sandbox.peak_rss_mb()
            if rss is not None:
                self.results.note(f"engine_peak_rss_mb.{self.size}", round(rss, 1))
            self.sandbox.stop()
            self.sandbox = None
        if self.server is not None:
            self.server.stop(keep=self.options.keep)
            self.server = None
            self.warehouse = None


StepFn = Callable[[SizeContext, int, bool], bool]


@dataclass(frozen=True)
class Step:
    name: str
    run: StepFn
    requires: tuple[str, ...]
    priority: int  # lower is kept first when the time budget is short
    fixed_cost: bool = False  # cost does not grow with size (samples, crypto)
    # How cost grows with size when only one smaller size was measured: 1.0 is linear;
    # dbt's many nodes carry a large fixed cost per build, so it grows more slowly.
    growth: float = 1.0


def _generate(ctx: SizeContext, r: int, profile: bool) -> bool:
    root = str(ctx.data.root)
    return ctx.measure("generate", source.generate_data, root, ctx.size, ctx.options.seed,
                       profile=profile)  # fmt: skip


def _source_limits(ctx: SizeContext, r: int, profile: bool) -> bool:
    data = ctx.data
    ok = ctx.measure("limit.write_bytes", source.write_bytes, str(ctx.work), data.bytes(),
                     data.total_records(), profile=profile)  # fmt: skip
    for name in SOURCES:
        files, records = data.files(name), data.records(name)
        ok &= ctx.measure(f"limit.cat.{name}", source.cat_bytes, files, records, profile=profile)
        ok &= ctx.measure(f"limit.read.{name}", source.read_bytes, files, records,
                          profile=profile)  # fmt: skip
    ok &= ctx.measure("limit.orjson", source.orjson_lines, data.files("fhir"), profile=profile)
    return ok


def _parse(ctx: SizeContext, r: int, profile: bool) -> bool:
    data = ctx.data
    ok = ctx.measure("parse.fhir.fast", source.parse_fhir, data.files("fhir"), "fast",
                     profile=profile)  # fmt: skip
    ok &= ctx.measure("parse.hl7", source.parse_hl7, data.files("hl7"), profile=profile)
    ok &= ctx.measure("parse.crm", source.parse_crm, data.files("crm"), profile=profile)
    ok &= ctx.measure("baseline.pandas", source.pandas_csv, data.files("crm"), profile=profile)
    ok &= ctx.measure("baseline.polars", source.polars_csv, data.files("crm"), profile=profile)
    return ok


def _prepare_samples(ctx: SizeContext) -> None:
    if not ctx.fhir_sample_files:
        folder = ctx.work / "samples"
        ctx.fhir_sample_files = samples.fhir_sample(
            ctx.data, ctx.options.fhir_sample, folder / "fhir"
        )
        ctx.hl7_sample_file = str(folder / "hl7" / "sample.hl7")
        samples.hl7_sample(ctx.data, ctx.options.hl7_sample, Path(ctx.hl7_sample_file))


def _samples(ctx: SizeContext, r: int, profile: bool) -> bool:
    _prepare_samples(ctx)
    fhir, hl7 = ctx.fhir_sample_files, ctx.hl7_sample_file
    ok = ctx.measure("parse.fhir.strict", source.parse_fhir, fhir, "strict", profile=profile)
    ok &= ctx.measure("baseline.fhir_resources", samples.fhir_resources_models, fhir,
                      profile=profile)  # fmt: skip
    ok &= ctx.measure("baseline.hl7apy", samples.hl7apy_messages, hl7, profile=profile)
    ctx.measure("baseline.python_hl7", samples.python_hl7_messages, hl7, profile=profile)
    return ok


def _protect(ctx: SizeContext, r: int, profile: bool) -> bool:
    return ctx.measure(None, protect.protect_records, str(ctx.data.root), ctx.keyring,
                       profile=profile)  # fmt: skip


def _crypto(ctx: SizeContext, r: int, profile: bool) -> bool:
    return ctx.measure(None, protect.crypto_limits, ctx.options.crypto_calls, profile=profile)


def _ingest(ctx: SizeContext, r: int, profile: bool) -> bool:
    """A fresh warehouse per repeat; the last one carries the chain (resolve, dbt, sync)."""
    if ctx.warehouse is not None:
        ctx.drop_warehouse(ctx.warehouse)
    ctx.warehouse = ctx.fresh_warehouse("ingest")
    if "postgres_version" not in ctx.results.data["notes"]:
        ctx.results.note("postgres_version", postgres_version(ctx.warehouse))
    ok = True
    for name in SOURCES:
        key = "ingest.fhir.fast" if name == "fhir" else f"ingest.{name}"
        ok &= ctx.measure(key, load.ingest, ctx.warehouse, ctx.data.files(name), name, "fast",
                          ctx.keyring, profile=profile)  # fmt: skip
    return ok


def _ingest_strict(ctx: SizeContext, r: int, profile: bool) -> bool:
    _prepare_samples(ctx)
    warehouse = ctx.fresh_warehouse("strict")
    try:
        return ctx.measure("ingest.fhir.strict", load.ingest, warehouse, ctx.fhir_sample_files,
                           "fhir", "strict", ctx.keyring, profile=profile)  # fmt: skip
    finally:
        ctx.drop_warehouse(warehouse)


def _db_limits(ctx: SizeContext, r: int, profile: bool) -> bool:
    ok = True
    for name in SOURCES:
        ok &= ctx.measure(f"limit.copy.{name}", load.copy_limit, ctx.warehouse, name,
                          ctx.data.records(name), profile=profile)  # fmt: skip
    ok &= ctx.measure(None, load.insert_versus_copy, ctx.warehouse, ctx.options.insert_rows,
                      profile=profile)  # fmt: skip
    ok &= ctx.measure("limit.read_landing", model.read_landing, ctx.warehouse, profile=profile)
    return ok


def _resolve(ctx: SizeContext, r: int, profile: bool) -> bool:
    ok = ctx.measure("resolve", model.resolve, ctx.warehouse, ctx.keyring, profile=profile)
    return ok and ctx.measure("limit.read_keys", model.read_identity_keys, ctx.warehouse,
                              profile=profile)  # fmt: skip


def _dbt_full(ctx: SizeContext, r: int, profile: bool) -> bool:
    return ctx.measure("dbt.full", model.dbt_build, ctx.warehouse, ctx.dbt_target, True,
                       ctx.options.dbt_args, profile=profile)  # fmt: skip


def _dbt_incremental(ctx: SizeContext, r: int, profile: bool) -> bool:
    delta = max(1, round(ctx.size * ctx.options.delta_share))
    seed = 1000 + r + (100 if profile else 0)
    return ctx.measure("dbt.incremental", model.dbt_incremental, ctx.warehouse, ctx.dbt_target,
                       ctx.keyring, delta, seed, ctx.options.incremental_args,
                       profile=profile)  # fmt: skip


def _sync_full(ctx: SizeContext, r: int, profile: bool) -> bool:
    """A fresh engine and a new destination per repeat, so every member is an add."""
    if ctx.sandbox is not None:
        ctx.sandbox.stop()
    ctx.sandbox = SandboxProcess(ctx.work / "engine")
    ctx.destination = f"{ctx.destination_prefix}-{'p' if profile else r}"
    return ctx.measure("sync.full", activate.sync_all, ctx.warehouse, ctx.keyring,
                       ctx.sandbox.endpoint, ctx.destination, ctx.manifest,
                       profile=profile)  # fmt: skip


def _sync_incremental(ctx: SizeContext, r: int, profile: bool) -> bool:
    assert ctx.sandbox is not None
    return ctx.measure("sync.incremental", activate.sync_changed, ctx.warehouse, ctx.keyring,
                       ctx.sandbox.endpoint, ctx.destination, ctx.manifest,
                       ctx.options.change_share,
                       r + 1 + (100 if profile else 0), profile=profile)  # fmt: skip


def _sync_repush(ctx: SizeContext, r: int, profile: bool) -> bool:
    assert ctx.sandbox is not None
    ok = ctx.measure("baseline.repush", activate.repush_all, ctx.warehouse, ctx.keyring,
                     ctx.sandbox.endpoint, ctx.manifest, profile=profile)  # fmt: skip
    return ok and ctx.measure("limit.push", activate.push_limit, ctx.warehouse,
                              str(ctx.work / "engine-limit"), profile=profile)  # fmt: skip


def _events(ctx: SizeContext, r: int, profile: bool) -> bool:
    assert ctx.sandbox is not None
    ok = ctx.measure("events.readback", activate.read_events, ctx.warehouse,
                     ctx.sandbox.endpoint, "bench-events", profile=profile)  # fmt: skip
    ok &= ctx.measure("limit.copy.events", activate.copy_events, ctx.warehouse, profile=profile)
    ok &= ctx.measure("events.extract", activate.read_extract, ctx.warehouse, str(ctx.work),
                      "bench-events", "bench-extract", profile=profile)  # fmt: skip
    return ok


STEPS: list[Step] = [
    Step("generate", _generate, (), 0),
    Step("source_limits", _source_limits, ("generate",), 11),
    Step("parse", _parse, ("generate",), 9),
    Step("samples", _samples, ("generate",), 13, fixed_cost=True),
    Step("protect", _protect, ("generate",), 10),
    Step("crypto", _crypto, (), 12, fixed_cost=True),
    Step("ingest", _ingest, ("generate",), 1),
    Step("ingest_strict", _ingest_strict, ("generate",), 15, fixed_cost=True),
    Step("db_limits", _db_limits, ("ingest",), 14),
    Step("resolve", _resolve, ("ingest",), 2),
    Step("dbt_full", _dbt_full, ("resolve",), 3, growth=0.7),
    Step("dbt_incremental", _dbt_incremental, ("dbt_full",), 7, growth=0.7),
    Step("sync_full", _sync_full, ("dbt_full",), 4),
    Step("sync_incremental", _sync_incremental, ("sync_full",), 6),
    Step("sync_repush", _sync_repush, ("sync_full",), 8),
    Step("events", _events, ("sync_full",), 5),
]
STEP_NAMES = [s.name for s in STEPS]


def with_prerequisites(names: set[str]) -> set[str]:
    """The named steps plus every step they need."""
    wanted = set(names)
    changed = True
    while changed:
        changed = False
        for step in STEPS:
            if step.name in wanted:
                missing = set(step.requires) - wanted
                if missing:
                    wanted |= missing
                    changed = True
    return wanted


def cleanup_size(ctx: SizeContext) -> None:
    ctx.close()
    if not ctx.options.keep:
        shutil.rmtree(ctx.work, ignore_errors=True)
