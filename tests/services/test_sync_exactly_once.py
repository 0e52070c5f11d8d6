"""`kill -9` during a sync, then a rerun: every member at the engine exactly once, every
ledger row settled. The sync runs as the real `hub sync` process against the SANDBOX engine
over HTTPS; the kill lands at a random point after some batches were acknowledged."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from services.sync import sync_audience
from tests.services.conftest import SECRET, TOKEN, client
from tests.services.population import add_people, define_audience, person, revoke

pytestmark = pytest.mark.slow

MEMBERS = 1500
HUB = Path(sys.executable).parent / "hub"


def sent_counts(engine) -> Counter:
    api, counts, cursor = client(engine), Counter(), None
    while True:
        page = api.events(cursor, 1000)
        if not page.events:
            return counts
        counts.update(e.external_id for e in page.events if e.type == "sent")
        cursor = page.next_cursor


def test_kill_9_mid_sync_then_rerun_leaves_each_member_once(sync_db, keyring, cipher, sandbox):
    seed = int.from_bytes(os.urandom(4), "big")
    kill_after = random.Random(seed).randrange(100, MEMBERS // 2)
    with sync_db.connect() as conn:
        add_people(conn, cipher, range(MEMBERS))
        define_audience(conn, "flu", "treatment", range(MEMBERS))
    engine = sandbox()
    env = {
        **os.environ,
        "DATABASE_URL": sync_db.url(),
        "HUB_STATE_DIR": str(keyring),
        "HUB_ENGINE_URL": engine.base_url,
        "HUB_ENGINE_TOKEN": TOKEN,
        "HUB_ENGINE_SIGNING_SECRET": SECRET,
        "HUB_ENGINE_CA_FILE": str(engine.ca_cert_path),
        "HUB_ENGINE_DESTINATION": "sandbox",
    }
    args = [str(HUB), "sync", "flu", "--to", "sandbox", "--batch-size", "10", "--json"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    with sync_db.connect(autocommit=True) as watch:
        while time.monotonic() < deadline and proc.poll() is None:
            acked = watch.execute(
                "select count(*) from activation.ledger where status = 'acked'"
            ).fetchone()[0]
            if acked >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (seed, proc.stderr.read().decode()[-2000:])

    with sync_db.connect() as conn:
        pending_upserts = [
            p
            for (p,) in conn.execute(
                "select person_token from activation.ledger where status = 'pending'"
                " and operation = 'add' order by person_token"
            )
        ]
        # Someone whose batch was in flight loses consent before the rerun: they must not
        # be pushed again, and if the engine already has them they must be removed.
        revoked = pending_upserts[:1]
        for token in revoked:
            revoke(conn, int(token[1:]), "treatment", dt.date.today())
        result = sync_audience(
            conn, client(engine), cipher, destination="sandbox", audience="flu", batch_size=50
        )
        unsettled = conn.execute(
            "select count(*) from activation.ledger where status = 'pending'"
        ).fetchone()[0]
        state = conn.execute("select count(*) from activation.sync_state").fetchone()[0]

    wanted = {person(i) for i in range(MEMBERS)} - set(revoked)
    at_engine = client(engine).list_member_ids("flu")
    assert len(at_engine) == len(set(at_engine)), seed
    assert set(at_engine) == wanted, seed
    sends = sent_counts(engine)
    assert set(sends.values()) == {1}, seed  # nobody was sent the campaign twice
    assert set(sends) >= wanted
    assert unsettled == 0 and state == len(wanted), seed
    assert result.resumed >= 0 and result.added + kill_after <= MEMBERS + 10 * 2
