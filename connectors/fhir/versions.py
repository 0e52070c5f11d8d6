"""Version checks that apply to any resource: reject what is visibly not FHIR R4.

Rules (FHIR_WRONG_VERSION), kept deliberately simple and cheap:
- `meta.profile` names a pre-R4 specification: the URL mentions `stu3`, `dstu2`, `/fhir/3.`,
  `/fhir/1.` or `/r3/` (case-insensitive), or a known R5 base (`/fhir/5.`, `/r5/`).
- a top-level `fhirVersion` (CapabilityStatement, ImplementationGuide...) is not 4.x.
Resource-specific rules (Consent's STU3/R5 elements) live with that resource's extractor.
"""

from __future__ import annotations

from typing import Any

from connectors.fhir.values import FieldError

_OTHER_VERSION_MARKERS = ("stu3", "dstu2", "/fhir/3.", "/fhir/1.", "/r3/", "/fhir/5.", "/r5/")


def check_version(r: dict[str, Any]) -> None:
    """Raise FHIR_WRONG_VERSION if the resource declares a FHIR version other than R4."""
    meta = r.get("meta")
    if type(meta) is dict:
        profiles = meta.get("profile")
        if type(profiles) is list:
            for p in profiles:
                if type(p) is str and _names_other_version(p):
                    raise FieldError("FHIR_WRONG_VERSION", "meta.profile", "names a non-R4 profile")
    version = r.get("fhirVersion")
    if version is not None and not (type(version) is str and version.startswith("4.")):
        raise FieldError("FHIR_WRONG_VERSION", "fhirVersion", "is not 4.x")


def _names_other_version(profile: str) -> bool:
    low = profile.lower()
    return any(marker in low for marker in _OTHER_VERSION_MARKERS)
