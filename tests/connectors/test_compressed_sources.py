"""Compressed drops (.gz, .zst) ingest like plain ones, and the kind is told from the name."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from backports import zstd

from pipelines.resources import PrivacyResource
from services.ingest import UnknownSourceError, detect_source, ingest_uris


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("Patient.000.ndjson.zst", "fhir"),
        ("bundle.json.gz", "fhir"),
        ("adt.hl7", "hl7"),
        ("contacts.csv.gz", "crm"),
        ("export.parquet", "crm"),
        ("s3://bucket/inbound/hl7/feed.txt", "hl7"),
    ],
)
def test_source_kind_is_told_from_extension_then_folder(name, kind):
    assert detect_source(name) == kind


def test_an_unrecognisable_name_asks_for_the_source():
    with pytest.raises(UnknownSourceError, match="--source"):
        detect_source("/drops/mystery.bin")


def test_gzip_and_zstd_files_load_with_the_same_counts(warehouse, shared_data, tmp_path: Path):
    data = (shared_data / "fhir" / "Patient-fhiry-25.ndjson").read_bytes()
    (tmp_path / "a.ndjson.gz").write_bytes(gzip.compress(data))
    (tmp_path / "b.ndjson.zst").write_bytes(zstd.compress(data))
    with warehouse.connect() as conn:
        results = ingest_uris(
            conn,
            [str(tmp_path / "a.ndjson.gz"), str(tmp_path / "b.ndjson.zst")],
            PrivacyResource().protector(),
        )
    assert [(r.read, r.loaded + r.quarantined) for r in results] == [(25, 25), (25, 25)]
