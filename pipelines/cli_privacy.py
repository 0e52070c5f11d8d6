"""`hub keys`, `hub forget`, `hub policy`, `hub retention` and `hub audit disclosures`.

Privacy operations for security officers and data engineers. Output is counts, versions and
tokens - never a key, never a value from a record (the identifier typed on the command line
is not echoed back either).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

keys_app = typer.Typer(
    help="Data keys: status, rotation, retirement, re-wrapping.", no_args_is_help=True
)
forget_app = typer.Typer(
    help="Forget a person: shred their vault rows, remove them from audiences and engines.",
    invoke_without_command=True,
)
policy_app = typer.Typer(
    help="Field policy coverage, k-anonymity and PHI scans.", no_args_is_help=True
)
retention_app = typer.Typer(help="Retention periods and the audited purge.", no_args_is_help=True)


def register(app: typer.Typer, audit_app: typer.Typer) -> None:
    """Mount the privacy commands on the main `hub` app."""
    app.add_typer(keys_app, name="keys")
    app.add_typer(forget_app, name="forget")
    app.add_typer(policy_app, name="policy")
    app.add_typer(retention_app, name="retention")
    audit_app.command("disclosures")(audit_disclosures)


def _warehouse():
    from connectors.warehouse.database import Warehouse

    warehouse = Warehouse.from_env(keep_running=True)
    warehouse.ensure_schema()
    return warehouse


def _privacy():
    from pipelines.resources import PrivacyResource

    return PrivacyResource()


def _provider():
    from connectors.warehouse.database import state_dir
    from domain.keys import KeyringFileProvider

    return KeyringFileProvider(state_dir() / "keyring.json")


def _settings():
    from domain.privacy_settings import load_privacy_settings

    path = os.environ.get("HUB_PRIVACY_SETTINGS")
    return load_privacy_settings(Path(path) if path else None)


def _emit(data: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        for line in lines:
            typer.echo(line)


# -- keys -------------------------------------------------------------------------------------


@keys_app.command("status")
def keys_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Key versions per kind (current, available, retired, pending) and the master key kind."""
    provider = _provider()
    data = {
        "master": provider.master_kind(),
        **{kind: provider.versions(kind).as_dict() for kind in ("token", "vault")},
    }
    lines = [f"master key: {data['master']}"] + [
        f"{kind}: current v{v['current']}, available {v['available']}, retired {v['retired']}"
        for kind, v in data.items()
        if kind != "master"
    ]
    _emit(data, as_json, lines)


@keys_app.command("rotate")
def keys_rotate(
    tokens: bool = typer.Option(
        False, "--tokens", help="Rotate the token key and re-key every stored token."
    ),
    vault: bool = typer.Option(
        False, "--vault", help="Rotate the vault key and re-encrypt (default when no flag)."
    ),
    retire_old: bool = typer.Option(
        False, "--retire-old", help="After re-encrypting, destroy old vault key versions."
    ),
    batch_rows: int = typer.Option(2000, "--batch-rows", min=1),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """New key version. Vault: re-encrypt online, in batches. Tokens: pause ingest and syncs
    first (docs/privacy-operations.md); a crashed rotation resumes when run again."""
    from services.keys import rotate_token_key, rotate_vault_key

    provider = _provider()
    data: dict[str, object] = {}
    with _warehouse().connect() as conn:
        if vault or not tokens:
            data["vault"] = rotate_vault_key(conn, provider, batch_rows, retire_old).as_dict()
        if tokens:
            data["tokens"] = rotate_token_key(conn, provider, _privacy().policy()).as_dict()
    lines = []
    if "vault" in data:
        v = data["vault"]
        lines.append(
            f"vault key v{v['from_version']} -> v{v['to_version']}: re-encrypted"
            f" {v['rows_reencrypted']} vault rows and {v['quarantine_payloads_reencrypted']}"
            f" quarantine payloads in {v['batches']} batches; retired {v['retired_versions']}"
        )
    if "tokens" in data:
        t = data["tokens"]
        lines.append(
            f"token key v{t['from_version']} -> v{t['to_version']}: {t['tokens_mapped']} tokens"
            f" and {t['persons_mapped']} persons re-keyed, {t['vault_rows_reencrypted']} vault"
            f" rows re-sealed; tables: {t['rows_rekeyed_by_table']}"
        )
    _emit(data, as_json, lines)


@keys_app.command("retire")
def keys_retire() -> None:
    """Destroy old vault key versions (refused while any row still needs them)."""
    from services.keys import retire_vault_keys

    with _warehouse().connect() as conn:
        retired = retire_vault_keys(conn, _provider())
    typer.echo(f"retired vault key versions: {retired or 'none'}")


@keys_app.command("rewrap")
def keys_rewrap(
    to: str = typer.Option(
        ..., "--to", help="passphrase (HUB_KEYRING_PASSPHRASE) | env (HUB_MASTER_KEY) | local-file"
    ),
) -> None:
    """Re-wrap every data key under another master key; data keys and data do not change."""
    from domain.keys import (
        EnvMasterKey,
        KeyConfigurationError,
        LocalMasterKeyFile,
        PassphraseMasterKey,
        master_file_for,
    )

    provider = _provider()
    if to == "passphrase":
        passphrase = os.environ.get("HUB_KEYRING_PASSPHRASE")
        if not passphrase:
            raise KeyConfigurationError("set HUB_KEYRING_PASSPHRASE to re-wrap under it")
        master = PassphraseMasterKey(passphrase)
    elif to == "env":
        master = EnvMasterKey()
    elif to == "local-file":
        master = LocalMasterKeyFile(master_file_for(provider.path))
    else:
        raise typer.BadParameter("--to must be passphrase, env or local-file")
    provider.rewrap(master)
    typer.echo(f"keyring re-wrapped under the {master.kind} master key")


# -- forget -----------------------------------------------------------------------------------


@forget_app.callback()
def forget(
    ctx: typer.Context,
    person: str | None = typer.Option(
        None, "--person", help="Email, MRN or person/subject token of the person to forget."
    ),
    authority: str | None = typer.Option(
        None, "--authority", help="MRN assigning authority (when the MRN alone is ambiguous)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; change nothing."),
    vacuum: bool = typer.Option(False, "--vacuum", help="VACUUM the vault tables afterwards."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Crypto-shred a person's vault rows, drop them from audiences, queue engine removals."""
    if ctx.invoked_subcommand is not None:
        return
    if not person:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    from services.forget import forget_person

    privacy = _privacy()
    with _warehouse().connect() as conn:
        report = forget_person(
            conn,
            privacy.tokenizer(),
            privacy.vault_cipher(),
            privacy.policy(),
            person,
            authority,
            dry_run=dry_run,
            vacuum=vacuum,
        )
    data = report.as_dict()
    label = "DRY RUN: would forget" if dry_run else "forgot"
    _emit(
        data,
        as_json,
        [
            f"{label} {report.persons} person(s) matched by {report.matched_by}:"
            f" {report.subjects} source subjects, {report.vault_rows_shredded} vault rows,"
            f" {report.identity_keys_removed} identity keys,"
            f" {report.quarantine_payloads_shredded} quarantine payloads,"
            f" {report.audience_rows_removed} audience rows;"
            f" {report.removals_queued} engine removals queued"
        ],
    )
    if not report.persons and not report.subjects:
        raise typer.Exit(1)


@forget_app.command("drain")
def forget_drain(
    to: str = typer.Option("sandbox", "--to", help="Destination whose queued removals to push."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Push the removals `hub forget` queued for one destination to its engine."""
    from pipelines.definitions import resources
    from services.forget import drain_forget_queue

    engine_resource = resources()["email_engine"]
    try:
        with _warehouse().connect() as conn:
            report = drain_forget_queue(conn, engine_resource.engine(), to)
    finally:
        engine_resource.teardown_after_execution(None)
    _emit(
        report.as_dict(),
        as_json,
        [f"{to}: {report.removed} removed, {report.failed} failed"],
    )
    if report.failed:
        raise typer.Exit(1)


# -- policy -----------------------------------------------------------------------------------


@policy_app.command("check")
def policy_check(
    uris: list[str] = typer.Argument(..., help="Files to read (nothing is loaded)."),
    source: str | None = typer.Option(None, help="fhir | hl7 | crm (default: from the name)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Source fields the field policy does not cover (they would be dropped), with counts."""
    from services.policy_check import check_policy

    report = check_policy(uris, _privacy().policy(), source)
    lines = [
        f"{report.files} files, {report.records} records ({report.rejected} rejected by parsers)"
    ]
    lines += [f"  not in policy: {name}: {count}" for name, count in report.uncovered.items()]
    lines += [f"  unknown entity: {name}: {n}" for name, n in report.unknown_entities.items()]
    if report.covered:
        lines.append("every field is covered by the policy")
    _emit(report.as_dict(), as_json, lines)


@policy_app.command("kanon")
def policy_kanon(
    k: int | None = typer.Option(None, "--k", min=2, help="Override the configured k."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """k-anonymity of marts.dim_persons on (zip3, birth_year, sex): small cells and a fix."""
    from services.kanon import dim_persons_kanon

    settings = _settings().k_anonymity
    if k is not None:
        settings = settings.model_copy(update={"k": k})
    with _warehouse().connect() as conn:
        report = dim_persons_kanon(conn, settings)
    data = report.as_dict()
    suggestion = report.suggestion
    lines = [
        f"k={report.k} over {', '.join(report.quasi_identifiers)}: {report.records} persons,"
        f" {report.cells} cells, {len(report.small_cells)} below k"
        f" ({report.records_in_small_cells} persons)"
    ]
    if suggestion is not None and not report.satisfied:
        levels = ", ".join(f"{q}: {level}" for q, level in suggestion.levels.items())
        lines.append(
            f"suggestion: generalize {levels}; then suppress {suggestion.records_to_suppress}"
            f" persons in {suggestion.cells_below_k} cells ({suggestion.share_suppressed:.2%})"
        )
    _emit(data, as_json, lines)


@policy_app.command("scan")
def policy_scan(
    sample: int = typer.Option(200, "--sample", min=1, help="Vaulted people to look for."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Look for PHI outside the vault: a sample of vaulted values plus identifier patterns."""
    from services.phi_scan import warehouse_scan

    privacy = _privacy()
    with _warehouse().connect() as conn:
        report = warehouse_scan(conn, privacy.vault_cipher(), sample)
    lines = [f"scanned {len(report.scanned)} tables: {'clean' if report.clean else 'FOUND PHI'}"]
    lines += [f"  {where}: {kind} x{count}" for (where, kind), count in report.hits.items()]
    _emit(report.as_dict(), as_json, lines)
    if not report.clean:
        raise typer.Exit(1)


# -- retention --------------------------------------------------------------------------------


@retention_app.command("show")
def retention_show() -> None:
    """The configured retention periods."""
    typer.echo(json.dumps(_settings().retention.model_dump(), indent=2))


@retention_app.command("purge")
def retention_purge(
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; change nothing."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Purge what outlived its retention period (audited; the audit log itself is kept)."""
    from services.retention import purge

    with _warehouse().connect() as conn:
        report = purge(conn, _settings().retention, dry_run=dry_run)
    verb = "would purge" if dry_run else "purged"
    _emit(
        report.as_dict(),
        as_json,
        [f"{verb} {s.rows} from {s.target} (before {s.cutoff.date()})" for s in report.steps],
    )


# -- audit disclosures ------------------------------------------------------------------------


def audit_disclosures(
    person: str = typer.Option(..., "--person", help="Email, MRN or person/subject token."),
    authority: str | None = typer.Option(None, "--authority", help="MRN assigning authority."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Accounting of disclosures for one person: what was sent where, when, under which consent."""
    from services.disclosures import account_disclosures

    privacy = _privacy()
    with _warehouse().connect() as conn:
        accounting = account_disclosures(
            conn, privacy.tokenizer(), privacy.policy(), person, authority
        )
    lines = [
        f"{len(accounting.disclosures)} disclosures for {accounting.persons} person(s)"
        f" matched by {accounting.matched_by}"
    ]
    for d in accounting.disclosures:
        lines.append(
            f"  {d.at:%Y-%m-%d %H:%M} {d.operation} -> {d.destination}/{d.audience}"
            f" [{d.status}] purpose={d.purpose} consent={d.consent_ref or '-'}"
            f" fields={','.join(d.fields) or '-'}"
        )
    _emit(accounting.as_dict(), as_json, lines)
