"""FHIR R4 connector: NDJSON, single resources and Bundles -> SourceRecords and Rejections."""

from connectors.fhir.reader import read_fhir, read_fhir_stream

__all__ = ["read_fhir", "read_fhir_stream"]
