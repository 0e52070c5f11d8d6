"""One file dropped in the inbound folder, ingested alone: a dynamic partition per file URI.

The new-files sensor adds a partition for each file it sees and requests a run of it, so a
file is (re)processed by itself, and on Kubernetes each file's run gets its own pod. The
per-source ingest assets (assets/ingest.py) keep doing whole-folder loads for the schedules;
both go through services.ingest, which skips a file whose content is already loaded.
"""

from pathlib import Path
from urllib.parse import unquote, urlparse

import dagster as dg

from assets.retries import IO_RETRY
from connectors.warehouse.database import state_dir
from pipelines.resources import InboundResource, PrivacyResource, WarehouseResource
from services.ingest import SOURCES, detect_source, ingest_uris

inbound_files_partitions = dg.DynamicPartitionsDefinition(name="inbound_files")


class FileIngestConfig(dg.Config):
    fhir_mode: str = "fast"  # fast | strict


def file_uri(path: Path) -> str:
    """The partition key of a local file: its absolute file:// URI."""
    return path.resolve().as_uri()


def inbound_root(inbound: InboundResource) -> Path:
    """The inbound folder (as InboundResource.files resolves it)."""
    return Path(inbound.root).resolve() if inbound.root else state_dir() / "inbound"


def location_of(uri: str) -> str:
    """What the connectors open: a local path for file:// URIs, else the URI itself."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def source_of(uri: str, inbound_root: Path | None) -> str:
    """fhir | hl7 | crm: the inbound sub-folder the file sits in, else from its name."""
    location = location_of(uri)
    if inbound_root is not None:
        try:
            first = Path(location).resolve().relative_to(inbound_root.resolve()).parts[0]
        except (ValueError, IndexError):
            first = ""
        if first in SOURCES:
            return first
    return detect_source(location)


@dg.asset(
    key="inbound_files",
    group_name="ingest",
    partitions_def=inbound_files_partitions,
    retry_policy=IO_RETRY,
    description="Each inbound file (one partition per file URI) loaded into landing or quarantine.",
)
def inbound_files(
    context: dg.AssetExecutionContext,
    config: FileIngestConfig,
    warehouse: WarehouseResource,
    privacy: PrivacyResource,
    inbound: InboundResource,
) -> dg.MaterializeResult:
    uri = context.partition_key
    source = source_of(uri, inbound_root(inbound))
    with warehouse.warehouse().connect() as conn:
        (result,) = ingest_uris(
            conn, [location_of(uri)], privacy.protector(), source, config.fhir_mode
        )
    if result.read != result.loaded + result.quarantined:
        raise dg.Failure(
            description=f"{source} file {result.file_id} does not reconcile: read {result.read},"
            f" loaded {result.loaded}, quarantined {result.quarantined}",
            allow_retries=False,
        )
    context.log.info(
        f"{source} file {result.file_id}: read {result.read}, loaded {result.loaded},"
        f" quarantined {result.quarantined}{' (already loaded)' if result.skipped else ''}"
    )
    # Counts and ids, like the per-source ingest assets (the URI is the partition key).
    return dg.MaterializeResult(
        metadata={
            "source": source,
            "file_id": result.file_id,
            "skipped": result.skipped,
            "records_read": result.read,
            "records_loaded": result.loaded,
            "records_quarantined": result.quarantined,
            "quarantined_by_reason": dict(result.quarantined_by_reason),
        }
    )
