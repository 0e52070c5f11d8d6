"""The consent gate as a blocking check: every audience member passes domain/consent.py.

dbt builds marts.audience_membership through the consent_gate macro; this check re-decides
every member with the Python rules the send step uses (services.sync.gate: the modelled
consent events plus suppressions received since), for the audience's purpose on the day the
mart was evaluated. A member who fails means a segment escaped the macro or the two
implementations disagree: the check fails and, being blocking, stops activation in the run.
"""

from collections import Counter, defaultdict

import dagster as dg

from pipelines.resources import WarehouseResource
from services.sync import gate

AUDIENCE_MEMBERSHIP = dg.AssetKey(["marts", "audience_membership"])
CHUNK = 20_000


@dg.asset_check(
    asset=AUDIENCE_MEMBERSHIP,
    name="consent_gate",
    blocking=True,
    description=(
        "Every member of marts.audience_membership passes the send-time consent rules for"
        " its purpose on its evaluation day. Blocking: a failure stops activation."
    ),
)
def consent_gate_check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    failures: Counter = Counter()
    by_audience: Counter = Counter()
    checked = 0
    with warehouse.warehouse().connect() as conn:
        groups: dict[tuple[str, object], list[tuple[str, str]]] = defaultdict(list)
        for audience, person, purpose, day in conn.execute(
            "select audience, person_token, purpose, evaluated_on from marts.audience_membership"
        ):
            groups[(purpose, day)].append((audience, person))
        for (purpose, day), members in groups.items():
            for start in range(0, len(members), CHUNK):
                chunk = members[start : start + CHUNK]
                decisions = gate(conn, sorted({p for _, p in chunk}), purpose, day)
                for audience, person in chunk:
                    checked += 1
                    decision = decisions[person]
                    if not decision.allowed:
                        failures[decision.reason] += 1
                        by_audience[audience] += 1
    failed = sum(failures.values())
    return dg.AssetCheckResult(
        passed=failed == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None
        if failed == 0
        else (
            f"{failed} audience members fail the consent rules; activation is stopped."
            " Rebuild the dbt models (a suppression may have arrived since they were built),"
            " then check the segments named in failing_by_audience go through consent_gate."
        ),
        # Counts by audience and reason only: no person tokens in Dagster metadata.
        metadata={
            "members_checked": checked,
            "members_failing": failed,
            "failing_by_reason": dict(failures),
            "failing_by_audience": dict(by_audience),
        },
    )
