"""docs/openapi/engine.yaml matches what the SANDBOX engine serves and docs/engine-api.md
describes: same routes, and real answers validate against its schemas."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from connectors.email import HttpEngine, Member
from connectors.email.signing import signature_header
from sandbox import SandboxEngine
from sandbox.server import _ROUTES

DOCS = Path(__file__).resolve().parents[2] / "docs"
SPEC = yaml.safe_load((DOCS / "openapi" / "engine.yaml").read_text())
TOKEN, SECRET = "openapi-token", "openapi-secret"


def validator(pointer: str) -> Draft202012Validator:
    registry = Registry().with_resource(
        "urn:engine", Resource.from_contents(SPEC, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": f"urn:engine#{pointer}"}, registry=registry)


def answer_schema(path: str, method: str) -> str:
    response = SPEC["paths"][path][method]["responses"]["200"]
    if "$ref" in response:
        return response["$ref"][1:] + "/content/application~1json/schema"
    escaped = path.replace("~", "~0").replace("/", "~1")
    return f"/paths/{escaped}/{method}/responses/200/content/application~1json/schema"


def test_the_spec_lists_exactly_the_routes_the_sandbox_serves():
    served = {("/v1/health", "get")}
    for pattern, method, _ in _ROUTES:
        template = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.pattern)
        served.add((template, method.lower()))
    documented = {(path, method) for path, ops in SPEC["paths"].items() for method in ops}
    assert documented == served
    prose = (DOCS / "engine-api.md").read_text()
    for path, method in documented:
        assert f"`{method.upper()} {path}" in prose, (method, path)


@pytest.fixture
def engine(tmp_path: Path):
    with SandboxEngine(tmp_path, token=TOKEN, signing_secret=SECRET) as engine:
        yield engine


def signed_get(engine: SandboxEngine, target: str) -> dict:
    header = signature_header(SECRET, "GET", target, b"", int(time.time()))
    return requests.get(
        engine.base_url + target,
        headers={"Authorization": f"Bearer {TOKEN}", "X-Hub-Signature": header},
        verify=str(engine.ca_cert_path),
        timeout=5,
    ).json()


def test_real_answers_validate_against_the_spec(engine):
    api = HttpEngine(engine.base_url, TOKEN, SECRET, str(engine.ca_cert_path))
    api.ensure_audience("flu", "Flu", "treatment")
    members = [Member(f"p{i}", f"person{i}@example.org", {"given_name": "A"}) for i in range(40)]
    api.upsert("flu", [*members, Member("p-bad", "not-an-address", {})], "k1")

    events = signed_get(engine, "/v1/events?limit=1000")
    assert len(events["events"]) > 40
    validator(answer_schema("/v1/events", "get")).validate(events)
    for event in events["events"]:
        validator("/components/schemas/Event").validate(event)

    listed = signed_get(engine, "/v1/audiences/flu/members?limit=10")
    validator(answer_schema("/v1/audiences/{audience_id}/members", "get")).validate(listed)

    error = signed_get(engine, "/v1/events?cursor=bogus")
    validator("/components/schemas/Error").validate(error)


def test_the_results_schema_accepts_a_rejected_row(engine):
    results = {
        "results": [
            {"external_id": "p1", "status": "ok", "error_code": None},
            {"external_id": "p-bad", "status": "rejected", "error_code": "ENGINE_REJECTED"},
        ]
    }
    path = "/v1/audiences/{audience_id}/members:batchUpsert"
    validator(answer_schema(path, "post")).validate(results)
    with pytest.raises(Exception, match="enum"):
        validator(answer_schema(path, "post")).validate(
            {"results": [{"external_id": "p1", "status": "maybe", "error_code": None}]}
        )
