"""Fixed-size samples for the slow baselines (one fhir.resources model per resource, hl7apy,
python-hl7) and for strict-mode FHIR, so those figures cost the same at every size.

Samples are proportional: each file contributes its share of the cap, taken from its start.
"""

from __future__ import annotations

from pathlib import Path
from time import perf_counter

from bench.measure import StageResult
from bench.stages.files import DataSet

_MSH = "\rMSH|"


class StageSkipped(Exception):
    """The stage cannot run here (e.g. an optional library is not installed)."""


def fhir_sample(data: DataSet, cap: int, out_dir: Path) -> list[str]:
    """The first lines of each FHIR file, in proportion, as NDJSON files under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {p: e["records"] for p, e in data.manifest()["files"].items() if p.startswith("fhir")}
    total = sum(counts.values())
    written = []
    for path, count in sorted(counts.items()):
        take = max(1, round(cap * count / total)) if total > cap else count
        target = out_dir / Path(path).name
        with open(data.root / path, "rb") as source, open(target, "wb") as sink:
            for index, line in enumerate(source):
                if index >= take:
                    break
                sink.write(line)
        written.append(str(target))
    return written


def hl7_sample(data: DataSet, cap: int, out_file: Path) -> int:
    """The first messages (starting with MSH) of each HL7 file, in proportion, CR separated."""
    counts = {p: e["records"] for p, e in data.manifest()["files"].items() if p.startswith("hl7")}
    total = sum(counts.values())
    messages: list[str] = []
    for path, count in sorted(counts.items()):
        take = max(1, round(cap * count / total)) if total > cap else count
        messages.extend(_first_messages(data.root / path, take))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "w", encoding="utf-8", newline="") as sink:
        sink.write("\r".join(messages) + "\r")
    return len(messages)


def _first_messages(path: Path, take: int) -> list[str]:
    """Up to `take` messages from the start of an HL7 file (text before the first MSH,
    such as a planted headerless message, is not a message and is skipped)."""
    found: list[str] = []
    tail, preamble = "\r", True  # a virtual separator, so a leading MSH| is a boundary
    with open(path, encoding="utf-8-sig", newline="") as handle:
        while len(found) < take:
            chunk = handle.read(1 << 20)
            if not chunk:
                if not preamble:
                    found.append("MSH|" + tail.strip("\r"))
                break
            pieces = (tail + chunk).split(_MSH)
            tail = pieces.pop()  # may continue in the next chunk
            if pieces and preamble:
                pieces, preamble = pieces[1:], False
            found.extend("MSH|" + piece.strip("\r") for piece in pieces)
    return found[:take]


def read_messages(sample_file: str) -> list[str]:
    with open(sample_file, encoding="utf-8", newline="") as handle:
        text = handle.read()
    return ["MSH|" + m.strip("\r") for m in ("\r" + text).split(_MSH)[1:]]


def fhir_resources_models(files: list[str]) -> StageResult:
    """Baseline: orjson.loads + one fhir.resources R4B model_validate per resource."""
    import orjson
    from fhir.resources.R4B import get_fhir_model_class

    from bench.stages.load import FHIR_TYPES

    for resource_type in FHIR_TYPES:  # model modules load lazily: not billed to records
        get_fhir_model_class(resource_type)
    lines = invalid = 0
    started = perf_counter()
    for name in files:
        with open(name, "rb") as handle:
            for line in handle:
                lines += 1
                try:
                    resource = orjson.loads(line)
                    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
                except Exception:  # a bad record costs its attempt, like any other
                    invalid += 1
    return {"seconds": perf_counter() - started, "records": lines, "invalid": invalid}


def hl7apy_messages(sample_file: str) -> StageResult:
    """Baseline: hl7apy.parser.parse_message per message (find_groups=False, tolerant)."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    messages = read_messages(sample_file)
    failed = 0
    started = perf_counter()
    for text in messages:
        try:
            parse_message(text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
        except Exception:
            failed += 1
    return {"seconds": perf_counter() - started, "records": len(messages), "failed": failed}


def python_hl7_messages(sample_file: str) -> StageResult:
    """Baseline: python-hl7's hl7.parse per message (when the library is installed)."""
    try:
        import hl7
    except ImportError:
        raise StageSkipped("python-hl7 is not installed (pip install hl7)") from None
    messages = read_messages(sample_file)
    failed = 0
    started = perf_counter()
    for text in messages:
        try:
            hl7.parse(text)
        except Exception:
            failed += 1
    return {"seconds": perf_counter() - started, "records": len(messages), "failed": failed}
