"""Strict mode: validate a resource against the fhir.resources R4B model, PHI-free errors.

pydantic's `ValidationError` text and each error's `input`/`ctx` carry values from the
record, so they are never used: the message is built from the error locations (field paths)
alone. Keys the model does not know (`extra_forbidden`) are not echoed either, since an
unknown key is arbitrary text from the record: they are reported as "(unknown element)".
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from connectors.fhir.values import FieldError

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_MAX_PATHS = 5


class StrictValidator:
    """Validates resources with the R4B pydantic models; model classes are looked up once."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}

    def check(self, resource_type: str, resource: dict[str, Any]) -> None:
        """Raise FieldError(FHIR_INVALID) naming the failing field paths."""
        model = self._models.get(resource_type)
        if model is None:
            # Imported lazily: fast mode never pays for loading fhir.resources.
            from fhir.resources.R4B import get_fhir_model_class

            model = self._models[resource_type] = get_fhir_model_class(resource_type)
        try:
            model.model_validate(resource)
        except ValidationError as exc:
            raise FieldError("FHIR_INVALID", _paths(exc), "fails R4 validation") from None
        except Exception:
            # A model validator that crashes on odd input must not stop the file; its own
            # message may quote the input, so it is not used.
            raise FieldError("FHIR_INVALID", "(resource)", "could not be validated") from None


def _paths(exc: ValidationError) -> str:
    paths: list[str] = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = list(err["loc"])
        if err["type"] == "extra_forbidden" and loc:
            loc[-1] = "(unknown element)"
        parts = []
        for part in loc:
            if type(part) is int:
                parts.append(f"[{part}]")
            elif _FIELD_NAME.match(str(part)) or part == "(unknown element)":
                parts.append(("." if parts else "") + str(part))
            else:
                # pydantic adds validator labels (e.g. "function-after[...]") to some paths.
                continue
        path = "".join(parts) or "(resource)"
        if path not in paths:
            paths.append(path)
    shown = ", ".join(paths[:_MAX_PATHS])
    if len(paths) > _MAX_PATHS:
        shown += f" (+{len(paths) - _MAX_PATHS} more)"
    return shown
