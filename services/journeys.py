"""Run journeys: enter people, apply exit conditions, advance each person through the steps.

One tick (`run_journeys`) walks each journey's steps in topological order, so a person can
pass several steps in one tick (enter -> send -> wait at a branch) but never goes back: the
step graph is a DAG (checked on load) and journeys.step_log's key (journey, person, step)
refuses a second entry into any step, even after the YAML changed.

Sends reuse the sync path's guarantees: the consent gate (services.sync.gate) for the
journey's purpose on the tick's day, decryption of the declared fields only (audited), the
send-time DLP check, and a ledger (journeys.sends) written before each batch is pushed
with its idempotency key and acknowledged after. A crash between push and acknowledgement
leaves pending rows; the next tick pushes those people again under a new key, which the
engine absorbs because it keys members by external id and sends on first join only.

`now` is the tick's logical time (default: the clock). Waits and branch windows are
measured in it, so back-fills and tests can step through days in seconds.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from connectors.email.base import MAX_BATCH, EmailEngine, Member
from connectors.warehouse.audit import record_audit
from domain.journeys import PERSON_ATTRIBUTES, Condition, Journey, Step, load_journeys
from domain.send_dlp import check_payload
from domain.vault_cipher import VaultCipher
from services.sync import gate
from services.vault_reader import read_contacts

REPO_JOURNEYS = Path(__file__).resolve().parent.parent / "journeys"
JOURNEY_LOCK_CLASS = 7262010  # advisory lock namespace: one runner per journey
CONTACT_COLUMN = "email"


def journeys_dir() -> Path:
    """Where journey YAML lives: HUB_JOURNEYS_DIR, else the repository's journeys/ folder."""
    configured = os.environ.get("HUB_JOURNEYS_DIR")
    return Path(configured).resolve() if configured else REPO_JOURNEYS


def load(directory: Path | None = None, names: Iterable[str] = ()) -> list[Journey]:
    return load_journeys(directory or journeys_dir(), names)


@dataclass
class JourneyTick:
    """What one tick did to one journey (counts only, PHI-free)."""

    journey: str
    evaluated_at: datetime
    entered: int = 0
    sent: int = 0
    completed: int = 0
    active: int = 0
    steps_completed: Counter = field(default_factory=Counter)
    exited: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "journey": self.journey,
            "evaluated_at": self.evaluated_at.isoformat(),
            "entered": self.entered,
            "sent": self.sent,
            "completed": self.completed,
            "active": self.active,
            "exited": sum(self.exited.values()),
            "exited_by_reason": dict(self.exited),
            "steps_completed": dict(self.steps_completed),
        }


def run_journeys(
    conn: psycopg.Connection,
    engine: EmailEngine,
    cipher: VaultCipher,
    journeys: Sequence[Journey],
    *,
    destination: str,
    now: datetime | None = None,
) -> list[JourneyTick]:
    """One tick of every journey given, at `now` (timezone-aware; default: the clock)."""
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return [_Runner(conn, engine, cipher, j, destination, now).run() for j in journeys]


class _Runner:
    def __init__(
        self,
        conn: psycopg.Connection,
        engine: EmailEngine,
        cipher: VaultCipher,
        journey: Journey,
        destination: str,
        now: datetime,
    ) -> None:
        self.conn, self.engine, self.cipher = conn, engine, cipher
        self.journey, self.destination, self.now = journey, destination, now
        self.tick = JourneyTick(journey.name, now)

    def run(self) -> JourneyTick:
        conn, name = self.conn, self.journey.name
        conn.commit()
        locked = conn.execute(
            "select pg_try_advisory_lock(%s, hashtext(%s))", (JOURNEY_LOCK_CLASS, name)
        ).fetchone()[0]
        if not locked:
            raise RuntimeError(f"journey {name} is already being run; retry when it finishes")
        try:
            self._publish()
            self._exit_from_removed_steps()
            self._enter()
            self._apply_exit_conditions()
            for step in self.journey.topological_order():
                people = self._at(step.id)
                if people:
                    getattr(self, f"_{step.kind}")(step, people)
                    conn.commit()
            self.tick.active = conn.execute(
                "select count(*) from journeys.positions where journey = %s and status = 'active'",
                (name,),
            ).fetchone()[0]
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.execute("select pg_advisory_unlock(%s, hashtext(%s))", (JOURNEY_LOCK_CLASS, name))
            conn.commit()
        return self.tick

    # --- definitions, entry, exits -------------------------------------------------------------

    def _publish(self) -> None:
        """journeys.steps mirrors the YAML just loaded (dbt and the report read it)."""
        journey, digest = self.journey, self.journey.definition_hash()
        self.conn.execute("delete from journeys.steps where journey = %s", (journey.name,))
        for order, step in enumerate(journey.steps):
            self.conn.execute(
                "insert into journeys.steps (journey, step, step_order, kind, next_steps,"
                " engine_audience, message, purpose, definition_hash)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    journey.name,
                    step.id,
                    order,
                    step.kind,
                    step.next_steps,
                    journey.engine_audience(step.id) if step.send else None,
                    step.send.message if step.send else None,
                    journey.purpose,
                    digest,
                ),
            )
        self.conn.commit()

    def _exit_from_removed_steps(self) -> None:
        known = [step.id for step in self.journey.steps]
        rows = self.conn.execute(
            "select step, array_agg(person_token) from journeys.positions"
            " where journey = %s and status = 'active' and not (step = any(%s)) group by step",
            (self.journey.name, known),
        ).fetchall()
        for step_id, people in rows:
            self._exit(people, step_id, "step_removed")
        self.conn.commit()

    def _enter(self) -> None:
        journey = self.journey
        candidates = self._entry_candidates()
        if not candidates:
            return
        # Only people the gate allows today enter; the others are looked at again next tick.
        decisions = gate(self.conn, candidates, journey.purpose, self.now.date())
        allowed = [p for p in candidates if decisions[p].allowed]
        if not allowed:
            return
        start = journey.start.id
        self.conn.execute(
            "insert into journeys.positions (journey, person_token, step, entered_at,"
            " step_entered_at, updated_at) select %s, person, %s, %s, %s, %s"
            " from unnest(%s::text[]) person on conflict do nothing",
            (journey.name, start, self.now, self.now, self.now, allowed),
        )
        self.conn.execute(
            "insert into journeys.step_log (journey, person_token, step, entered_at)"
            " select %s, person, %s, %s from unnest(%s::text[]) person on conflict do nothing",
            (journey.name, start, self.now, allowed),
        )
        self.tick.entered += len(allowed)
        self.conn.commit()

    def _entry_candidates(self) -> list[str]:
        entry, name, today = self.journey.entry, self.journey.name, self.now.date()
        not_entered = (
            " and not exists (select 1 from journeys.positions p"
            " where p.journey = %(journey)s and p.person_token = c.person_token)"
        )
        params = {"journey": name, "today": today, "code_set": entry.code_set}
        if entry.segment is not None:
            known = self.conn.execute(
                "select 1 from marts.segment_catalog where audience = %s", (entry.segment,)
            ).fetchone()
            if known is None:
                raise LookupError(
                    f"journey {name}: entry segment {entry.segment!r} is not in"
                    " marts.segment_catalog; fix the journey file or build the dbt models"
                    " (hub segments list shows the known segments)"
                )
            sql = (
                "select distinct c.person_token from marts.audience_membership c"
                " where c.audience = %(segment)s"
            )
            params["segment"] = entry.segment
        else:
            params["since"] = today - timedelta(days=entry.within_days or 0)
            params["until"] = today + timedelta(days=entry.within_days or 0)
            sql = (
                "select c.person_token from ("
                + _entry_sql(self.conn, entry.data_update or "")
                + ") c where true"
            )
        rows = self.conn.execute(sql + not_entered + " order by 1", params).fetchall()
        return [person for (person,) in rows]

    def _apply_exit_conditions(self) -> None:
        if not self.journey.exit_when:
            return
        people = self._active()
        for condition in self.journey.exit_when:
            if not people:
                break
            matched = self._matching(condition, people)
            by_step: dict[str, list[str]] = defaultdict(list)
            for person in matched:
                by_step[people.pop(person).step].append(person)
            for step_id, persons in by_step.items():
                self._exit(persons, step_id, f"exit:{condition.describe()}")
        self.conn.commit()

    # --- steps -----------------------------------------------------------------------------

    def _send(self, step: Step, people: dict[str, _Position]) -> None:
        journey, conn = self.journey, self.conn
        persons = sorted(people)
        decisions = gate(conn, persons, journey.purpose, self.now.date())
        refused: dict[str, list[str]] = defaultdict(list)
        for person in persons:
            if not decisions[person].allowed:
                refused[f"consent:{decisions[person].reason}"].append(person)
        allowed = [p for p in persons if decisions[p].allowed]
        columns = [CONTACT_COLUMN, *journey.personalization_fields]
        contacts = (
            read_contacts(
                conn, self.cipher, allowed, columns, journey.purpose, f"journey {journey.name}"
            )
            if allowed
            else {}
        )
        members: list[Member] = []
        for person in allowed:
            contact = contacts.get(person, {})
            email = contact.get(CONTACT_COLUMN)
            fields = {f: contact.get(f) for f in journey.personalization_fields}
            if not email:
                refused["no_email"].append(person)
            elif check_payload(email, fields, journey.personalization_fields):
                refused["dlp_refused"].append(person)
            else:
                members.append(Member(external_id=person, email=email, fields=fields))
        for reason, persons_refused in refused.items():
            self._exit(persons_refused, step.id, reason)
        conn.commit()
        if not members:
            return
        audience = journey.engine_audience(step.id)
        assert step.send is not None
        self.engine.ensure_audience(
            audience, f"{journey.name}: {step.send.message}", journey.purpose
        )
        refs = {p: decisions[p].source_ref for p in allowed}
        for start in range(0, len(members), MAX_BATCH):
            self._push(step, audience, members[start : start + MAX_BATCH], refs)

    def _push(
        self, step: Step, audience: str, members: list[Member], refs: dict[str, str | None]
    ) -> None:
        conn, journey = self.conn, self.journey
        batch_key = f"{audience}:{self.now:%Y%m%dT%H%M%S}:{uuid.uuid4().hex[:12]}"
        for member in members:
            conn.execute(
                "insert into journeys.sends (journey, step, person_token, destination,"
                " engine_audience, batch_key, purpose, consent_ref, sent_at)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " on conflict (journey, step, person_token) do update set"
                "  destination = excluded.destination, batch_key = excluded.batch_key,"
                "  consent_ref = excluded.consent_ref, sent_at = excluded.sent_at,"
                "  status = 'pending', error_code = null"
                " where journeys.sends.status <> 'acked'",
                (
                    journey.name,
                    step.id,
                    member.external_id,
                    self.destination,
                    audience,
                    batch_key,
                    journey.purpose,
                    refs.get(member.external_id),
                    self.now,
                ),
            )
        conn.commit()  # the intent is durable before anything leaves the building
        results = self.engine.upsert(audience, members, idempotency_key=batch_key)
        sent = [r.external_id for r in results if r.status == "ok" and r.external_id]
        rejected: dict[str, list[str]] = defaultdict(list)
        for result in results:
            if result.status != "ok" and result.external_id:
                rejected[result.error_code or "ENGINE_REJECTED"].append(result.external_id)
        conn.execute(
            "update journeys.sends set status = 'acked', acked_at = now()"
            " where journey = %s and step = %s and batch_key = %s and person_token = any(%s)",
            (journey.name, step.id, batch_key, sent),
        )
        for code, persons in rejected.items():
            conn.execute(
                "update journeys.sends set status = 'rejected', error_code = %s,"
                " acked_at = now() where journey = %s and step = %s and batch_key = %s"
                " and person_token = any(%s)",
                (code, journey.name, step.id, batch_key, persons),
            )
            self._exit(persons, step.id, f"engine:{code}")
        record_audit(
            conn,
            "journey_send",
            f"{self.destination}/{audience}",
            len(sent),
            purpose=journey.purpose,
            role="hub_sender",
        )
        self.tick.sent += len(sent)
        self._move(sent, step, step.next, "sent")
        conn.commit()

    def _wait(self, step: Step, people: dict[str, _Position]) -> None:
        assert step.wait is not None
        due = [
            p for p, pos in people.items() if pos.step_entered_at + step.wait.duration <= self.now
        ]
        self._move(due, step, step.next, "waited")

    def _update_attribute(self, step: Step, people: dict[str, _Position]) -> None:
        update = step.update_attribute
        assert update is not None
        self.conn.execute(
            "insert into journeys.attributes (person_token, name, value, set_by_journey,"
            " updated_at) select person, %s, %s, %s, %s from unnest(%s::text[]) person"
            " on conflict (person_token, name) do update set value = excluded.value,"
            " set_by_journey = excluded.set_by_journey, updated_at = excluded.updated_at",
            (update.name, update.value, self.journey.name, self.now, list(people)),
        )
        self._move(list(people), step, step.next, f"set {update.name}")

    def _add_to_segment(self, step: Step, people: dict[str, _Position]) -> None:
        self.conn.execute(
            "insert into journeys.segment_members (segment, person_token, added_by_journey,"
            " added_at) select %s, person, %s, %s from unnest(%s::text[]) person"
            " on conflict do nothing",
            (step.add_to_segment, self.journey.name, self.now, list(people)),
        )
        self._move(list(people), step, step.next, f"added to {step.add_to_segment}")

    def _remove_from_segment(self, step: Step, people: dict[str, _Position]) -> None:
        self.conn.execute(
            "delete from journeys.segment_members where segment = %s and person_token = any(%s)",
            (step.remove_from_segment, list(people)),
        )
        self._move(list(people), step, step.next, f"removed from {step.remove_from_segment}")

    def _branch(self, step: Step, people: dict[str, _Position]) -> None:
        remaining = dict(people)
        for index, case in enumerate(step.branch or []):
            if not remaining:
                return
            matched = self._matching(case.when, remaining)
            self._move(sorted(matched), step, case.next, f"case {index}: {case.when.describe()}")
            for person in matched:
                remaining.pop(person)
        horizon = timedelta(days=step.horizon_days)
        expired = sorted(
            p for p, pos in remaining.items() if pos.step_entered_at + horizon <= self.now
        )
        if not expired:
            return
        if step.otherwise:
            self._move(expired, step, step.otherwise, "otherwise")
        else:
            self._exit(expired, step.id, "no_branch_matched")

    # --- conditions ------------------------------------------------------------------------

    def _matching(self, condition: Condition, people: dict[str, _Position]) -> set[str]:
        """Who among `people` meets `condition` now."""
        persons = list(people)
        journey = self.journey
        if condition.kind in ("opened", "clicked", "no_engagement"):
            engaged = (
                "exists (select 1 from engagement.events e where e.audience = s.engine_audience"
                " and e.person_token = s.person_token and {types})"
            )
            params: dict[str, object] = {
                "journey": journey.name,
                "step": condition.send_step,
                "persons": persons,
                "now": self.now,
            }
            if condition.kind == "no_engagement":
                where = " and s.sent_at + make_interval(days => %(days)s) <= %(now)s and not " + (
                    engaged.format(
                        types="(e.event_type = 'click' or (e.event_type = 'open'"
                        " and not e.machine_open))"
                    )
                )
                params["days"] = condition.days
            else:
                kind = "open" if condition.kind == "opened" else "click"
                types = f"e.event_type = '{kind}' and not e.machine_open"
                if condition.within_days:
                    types += " and e.occurred_at <= s.sent_at + make_interval(days => %(within)s)"
                    params["within"] = condition.within_days
                where = " and " + engaged.format(types=types)
            sql = (
                "select s.person_token from journeys.sends s where s.journey = %(journey)s"
                " and s.step = %(step)s and s.status = 'acked'"
                " and s.person_token = any(%(persons)s)" + where
            )
            return {p for (p,) in self.conn.execute(sql, params)}
        if condition.kind == "attribute":
            values = [condition.equals] if condition.equals is not None else condition.in_
            if condition.attribute in PERSON_ATTRIBUTES:
                # The column name comes from a fixed list, never from the file as such.
                sql = (
                    f"select person_token from marts.dim_persons where person_token = any(%s)"
                    f" and {condition.attribute}::text = any(%s)"
                )
                rows = self.conn.execute(sql, (persons, values))
            else:
                rows = self.conn.execute(
                    "select person_token from journeys.attributes where person_token = any(%s)"
                    " and name = %s and value = any(%s)",
                    (persons, condition.attribute, values),
                )
            return {p for (p,) in rows}
        if condition.kind == "data_update":
            entered = [people[p].entered_at for p in persons]
            sql = _since_entry_sql(self.conn, condition.data_update or "")
            rows = self.conn.execute(
                sql,
                {
                    "persons": persons,
                    "entered": entered,
                    "code_set": condition.code_set,
                    "today": self.now.date(),
                },
            )
            return {p for (p,) in rows}
        # left_entry_segment
        rows = self.conn.execute(
            "select p.person_token from unnest(%s::text[]) as p(person_token) where not exists"
            " (select 1 from marts.audience_membership m where m.audience = %s"
            " and m.person_token = p.person_token)",
            (persons, journey.entry.segment),
        )
        return {p for (p,) in rows}

    # --- positions -------------------------------------------------------------------------

    def _at(self, step_id: str) -> dict[str, _Position]:
        rows = self.conn.execute(
            "select person_token, step, entered_at, step_entered_at from journeys.positions"
            " where journey = %s and status = 'active' and step = %s",
            (self.journey.name, step_id),
        )
        return {row[0]: _Position(*row[1:]) for row in rows}

    def _active(self) -> dict[str, _Position]:
        rows = self.conn.execute(
            "select person_token, step, entered_at, step_entered_at from journeys.positions"
            " where journey = %s and status = 'active'",
            (self.journey.name,),
        )
        return {row[0]: _Position(*row[1:]) for row in rows}

    def _move(self, persons: Sequence[str], step: Step, target: str | None, outcome: str) -> None:
        """Complete `step` for `persons` and put them at `target` (None: journey complete)."""
        if not persons:
            return
        conn, name = self.conn, self.journey.name
        conn.execute(
            "update journeys.step_log set completed_at = %s, outcome = %s"
            " where journey = %s and step = %s and person_token = any(%s)",
            (self.now, outcome, name, step.id, list(persons)),
        )
        self.tick.steps_completed[step.id] += len(persons)
        if target is None:
            conn.execute(
                "update journeys.positions set status = 'completed', updated_at = %s"
                " where journey = %s and person_token = any(%s)",
                (self.now, name, list(persons)),
            )
            self.tick.completed += len(persons)
            return
        arrived = {
            p
            for (p,) in conn.execute(
                "insert into journeys.step_log (journey, person_token, step, entered_at)"
                " select %s, person, %s, %s from unnest(%s::text[]) person"
                " on conflict do nothing returning person_token",
                (name, target, self.now, list(persons)),
            )
        }
        conn.execute(
            "update journeys.positions set step = %s, step_entered_at = %s, updated_at = %s"
            " where journey = %s and person_token = any(%s)",
            (target, self.now, self.now, name, sorted(arrived)),
        )
        # Only possible if the YAML changed under people: never enter a step twice.
        revisits = sorted(set(persons) - arrived)
        if revisits:
            self._exit(revisits, step.id, "revisit_refused")

    def _exit(self, persons: Sequence[str], step_id: str, reason: str) -> None:
        if not persons:
            return
        name = self.journey.name
        self.conn.execute(
            "update journeys.step_log set left_at = %s, outcome = %s"
            " where journey = %s and step = %s and person_token = any(%s)",
            (self.now, f"exited: {reason}", name, step_id, list(persons)),
        )
        self.conn.execute(
            "update journeys.positions set status = 'exited', exit_reason = %s, updated_at = %s"
            " where journey = %s and person_token = any(%s)",
            (reason, self.now, name, list(persons)),
        )
        self.tick.exited[reason] += len(persons)


@dataclass(frozen=True, slots=True)
class _Position:
    step: str
    entered_at: datetime
    step_entered_at: datetime


# Clinical facts journeys react to, as (intermediate model, day column, extra filter). Each
# relation is read per person: directly when the model carries person_token, else through
# landing.person_xref from its subject_token (the intermediate layer has both shapes).
_DATA_UPDATES = {
    "lab_result": (
        "int_observations",
        "observed_on",
        " and (%(code_set)s::text is null or %(code_set)s::text = any(d.code_sets))",
    ),
    "appointment_booked": ("int_appointments", "starts_on", " and d.status = 'booked'"),
    "visit_completed": ("int_encounters", "started_on", "{visit}"),
}
_VISIT = {
    "counts_as_visit": " and d.counts_as_visit",
    "status": " and coalesce(d.status, '') not in ('planned', 'cancelled', 'entered-in-error',"
    " 'in-progress')",
}


def _data_update_relation(conn: psycopg.Connection, kind: str) -> tuple[str, str, str]:
    """(FROM clause aliased d with person_token, day column, filter) for a data update kind."""
    model, day, extra = _DATA_UPDATES[kind]
    columns = {
        name
        for (name,) in conn.execute(
            "select column_name from information_schema.columns"
            " where table_schema = 'intermediate' and table_name = %s",
            (model,),
        )
    }
    if not columns:
        raise LookupError(
            f"intermediate.{model} is missing: build the dbt models (full_pipeline) first"
        )
    if "person_token" in columns:
        relation = f"intermediate.{model} d"
    else:
        relation = (
            f"(select x.person_token, m.* from intermediate.{model} m"
            " join landing.person_xref x on x.subject_token = m.subject_token) d"
        )
    visit = _VISIT["counts_as_visit" if "counts_as_visit" in columns else "status"]
    return relation, f"d.{day}", extra.replace("{visit}", visit)


def _entry_sql(conn: psycopg.Connection, kind: str) -> str:
    """People with a data update recent enough to enter (%(since)s..%(today)s; for
    appointments, booked from %(today)s to %(until)s)."""
    relation, day, extra = _data_update_relation(conn, kind)
    window = (
        f"{day} between %(today)s and %(until)s"
        if kind == "appointment_booked"
        else f"{day} between %(since)s and %(today)s"
    )
    return f"select distinct d.person_token from {relation} where {window}{extra}"


_PEOPLE = "unnest(%(persons)s::text[], %(entered)s::timestamptz[]) as p(person_token, entered_at)"


def _since_entry_sql(conn: psycopg.Connection, kind: str) -> str:
    """People among %(persons)s with a data update since they entered: a lab result dated on
    or after the entry day (the one the journey waits for), a booked appointment still
    ahead, a visit after the entry day (the visit that let someone in is not a new one)."""
    relation, day, extra = _data_update_relation(conn, kind)
    when = {
        "lab_result": f"{day} >= p.entered_at::date",
        "appointment_booked": f"{day} >= %(today)s",
        "visit_completed": f"{day} > p.entered_at::date",
    }[kind]
    return (
        f"select distinct p.person_token from {_PEOPLE} join {relation}"
        f" on d.person_token = p.person_token where {when}{extra}"
    )


def journey_summary(conn: psycopg.Connection) -> list[dict[str, object]]:
    """Per journey: people by status and by current step (counts only)."""
    rows = conn.execute(
        "select journey, status, case when status = 'active' then step end, count(*)"
        " from journeys.positions group by 1, 2, 3 order by 1, 2, 3"
    ).fetchall()
    summary: dict[str, dict[str, object]] = {}
    for journey, status, step, persons in rows:
        entry = summary.setdefault(journey, {"journey": journey, "by_status": {}, "at_step": {}})
        by_status = entry["by_status"]
        assert isinstance(by_status, dict)
        by_status[status] = by_status.get(status, 0) + persons
        if step:
            at_step = entry["at_step"]
            assert isinstance(at_step, dict)
            at_step[step] = persons
    return list(summary.values())
