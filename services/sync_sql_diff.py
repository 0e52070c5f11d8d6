"""The diff of a sync, computed in SQL against activation.sync_state, chunk by chunk.

Adds and updates: the chunk's payload hashes are sent as arrays and joined with
sync_state (domain/sync_diff.py states the rules; a property test holds the two to the same
answers). Removes: sync_state rows whose person is no longer a wanted member - not in the
membership relation, or in it but excluded this run (consent, no address, DLP) - found in
one query at the end, so wanted members never need to be written anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import psycopg

from connectors.warehouse.arrays import array_literal
from domain.sync_diff import SYNC_MODES, SyncDiff
from services.send_gate import gate

CHUNK_SIZE = 5000
AUDIENCE_MEMBERS = (
    "select person_token from marts.audience_membership where audience = %(audience)s"
)


class SqlDiffer:
    """One run's diff: chunks of payload hashes against sync_state, and a temp table of the
    members excluded so far."""

    def __init__(
        self,
        conn: psycopg.Connection,
        destination: str,
        audience: str,
        mode: str,
        members_sql: str = AUDIENCE_MEMBERS,
        leavers_sql: str | None = None,
    ) -> None:
        self.destination, self.audience, self.mode = destination, audience, mode
        self.members_sql = members_sql
        # The synced people who are not members, when the caller found them already (a
        # query naming them, read when the removes are due); else they are looked up.
        self.leavers_sql = leavers_sql
        self.excluded_any = False
        self.excluded_synced = False  # whether sync_excluded may name people sync_state holds
        # The temp table lives for the session and survives the ledger commits between
        # batches. DELETE, not TRUNCATE: it is normally empty here (close() empties it), and
        # a TRUNCATE costs new files and catalog updates on every call.
        conn.execute("create temp table if not exists sync_excluded (person_token text)")
        conn.execute("delete from sync_excluded")

    def chunk(
        self, conn: psycopg.Connection, hashes: Mapping[str, str]
    ) -> tuple[list[str], list[str]]:
        """(adds, updates) among this chunk's wanted members, per domain/sync_diff rules."""
        if not hashes:
            return [], []
        # The chunk travels as two array literals in the one query: no temp table to empty,
        # fill and join per chunk (three round trips and a TRUNCATE each time before).
        people = list(hashes)
        rows = conn.execute(
            "select c.person_token, s.person_token is null"
            " from unnest(%s::text[], %s::text[]) as c(person_token, payload_hash)"
            " left join activation.sync_state s on s.destination = %s and s.audience = %s"
            "  and s.person_token = c.person_token"
            " where s.person_token is null"
            "  or (s.payload_hash <> c.payload_hash and %s <> 'append')"
            " order by c.person_token",
            (
                array_literal(people),
                array_literal(hashes[p] for p in people),
                self.destination,
                self.audience,
                self.mode,
            ),
        ).fetchall()
        adds = [person for person, is_add in rows if is_add]
        updates = [person for person, is_add in rows if not is_add]
        return adds, updates

    def exclude(self, conn: psycopg.Connection, people: list[str]) -> None:
        """Members of the audience who are not wanted this run (consent, address, DLP)."""
        if people:
            self.excluded_any = self.excluded_synced = True
            with conn.cursor() as cur, cur.copy("copy sync_excluded from stdin") as copy:
                for person in people:
                    copy.write_row((person,))

    def exclude_unsynced_sql(self, conn: psycopg.Connection, people_sql: str) -> None:
        """Members not wanted this run whom sync_state does not hold, named by a query (a
        constant of the caller's): the removes and unvouch_excluded need not look them up."""
        if conn.execute(f"insert into sync_excluded {people_sql}").rowcount:
            self.excluded_any = True

    def leavers(self, conn: psycopg.Connection) -> list[str]:
        """People in sync_state for this destination x audience who are not wanted."""
        if self.leavers_sql is not None:
            sql = f"select person_token from ({self.leavers_sql}) g"
            if self.excluded_synced:
                sql += (
                    " union select s.person_token from activation.sync_state s"
                    " where s.destination = %(destination)s and s.audience = %(audience)s"
                    # probed through the key (see unvouch_excluded)
                    "  and s.person_token = any(array(select person_token from sync_excluded))"
                )
            params = {"destination": self.destination, "audience": self.audience}
            return [person for (person,) in conn.execute(sql + " order by 1", params)]
        return [
            person
            for (person,) in conn.execute(
                "select s.person_token from activation.sync_state s"
                " where s.destination = %(destination)s and s.audience = %(audience)s and ("
                # not exists (an anti-join), never NOT IN: a million ids overflow the hash
                f"  not exists (select 1 from ({self.members_sql}) m"
                "   where m.person_token = s.person_token)"
                "  or s.person_token in (select person_token from sync_excluded))"
                " order by s.person_token",
                {"destination": self.destination, "audience": self.audience},
            )
        ]

    def removes(
        self,
        conn: psycopg.Connection,
        purpose: str,
        day: date,
        forced: list[str],
    ) -> list[str]:
        """Synced people no longer wanted: all of them in mirror mode; in upsert and append
        mode those whose consent lapsed. Plus people a crashed run may have pushed who no
        longer pass the gate (and are not wanted)."""
        gone = self.leavers(conn)
        if self.mode != "mirror":
            lapsed: list[str] = []
            for start in range(0, len(gone), CHUNK_SIZE):
                part = gone[start : start + CHUNK_SIZE]
                decisions = gate(conn, part, purpose, day)
                lapsed.extend(p for p in part if not decisions[p].allowed)
            gone = lapsed
        if forced:
            unwanted = {
                person
                for (person,) in conn.execute(
                    "select f.p from unnest(%(forced)s::text[]) as f(p)"
                    f" where not exists (select 1 from ({self.members_sql}) m"
                    "   where m.person_token = f.p)"
                    "  or f.p in (select person_token from sync_excluded)",
                    {"forced": forced, "audience": self.audience},
                )
            }
            gone = sorted(set(gone) | unwanted)
        return gone

    def unvouch_excluded(self, conn: psycopg.Connection) -> None:
        """Synced members excluded this run but kept at the engine (upsert and append modes,
        or a removal the engine rejected) lose their input digest, so every run re-gates them
        as before, not only the run in which their inputs changed."""
        if self.excluded_synced:
            # The people go as one array probed through sync_state's primary key, not as a
            # join with the temp table: the planner knows nothing of a destination that is
            # new since sync_state was last analysed, and once took it for one row and
            # rescanned the excluded people for each of 480,000 synced members (13 minutes
            # at 1M patients).
            conn.execute(
                "update activation.sync_state set source_fingerprint = null"
                " where destination = %s and audience = %s and source_fingerprint is not null"
                "  and person_token = any(array(select distinct person_token from sync_excluded))",
                (self.destination, self.audience),
            )

    def close(self, conn: psycopg.Connection) -> None:
        if self.excluded_any:
            conn.execute("truncate sync_excluded")
        conn.commit()


def diff_in_sql(
    conn: psycopg.Connection,
    destination: str,
    audience: str,
    wanted: Mapping[str, str],
    mode: str = "mirror",
    chunk_size: int = CHUNK_SIZE,
) -> SyncDiff:
    """domain.sync_diff.diff_membership, computed in SQL against activation.sync_state in
    chunks (what sync_audience does, without the gate and the push)."""
    if mode not in SYNC_MODES:
        raise ValueError(f"unknown sync mode {mode!r}; expected one of {SYNC_MODES}")
    conn.execute("create temp table if not exists diff_members (person_token text primary key)")
    conn.execute("truncate diff_members")
    with conn.cursor() as cur, cur.copy("copy diff_members from stdin") as copy:
        for person in wanted:
            copy.write_row((person,))
    differ = SqlDiffer(conn, destination, audience, mode, "select person_token from diff_members")
    diff = SyncDiff()
    items = sorted(wanted.items())
    for start in range(0, len(items), chunk_size):
        chunk = dict(items[start : start + chunk_size])
        adds, updates = differ.chunk(conn, chunk)
        diff.adds.extend(adds)
        diff.updates.extend(updates)
        diff.unchanged += len(chunk) - len(adds) - len(updates)
    if mode == "mirror":
        diff.removes = differ.leavers(conn)
    differ.close(conn)
    diff.adds.sort()
    diff.updates.sort()
    return diff
