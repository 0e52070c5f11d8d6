"""Child processes the kill tests SIGKILL at random points: ingest and sync, as the hub runs them.

    python -m tests.reliability.workers ingest FILE...
    python -m tests.reliability.workers sync AUDIENCE [--batch-size N]

The warehouse comes from DATABASE_URL and the keys from HUB_STATE_DIR, exactly as for `hub`;
the engine from REL_ENGINE_URL / REL_ENGINE_CA_FILE / REL_ENGINE_TOKEN / REL_ENGINE_SECRET.
Each prints "ready" once imports and connections are done, then works, then prints "done".
"""

from __future__ import annotations

import argparse
import os
import sys


def _ingest(files: list[str]) -> None:
    from connectors.warehouse.database import Warehouse
    from pipelines.resources import PrivacyResource
    from services.identity import resolve_persons
    from services.ingest import ingest_uris

    if "REL_READ_WORKER_MIN_BYTES" in os.environ:  # read workers for the test's small files
        from connectors.warehouse import read_worker

        read_worker.WORKER_MIN_BYTES = int(os.environ["REL_READ_WORKER_MIN_BYTES"])
    privacy = PrivacyResource()
    with Warehouse.from_env().connect() as conn:
        protector = privacy.protector()
        print("ready", flush=True)
        results = ingest_uris(conn, files, protector)
        resolve_persons(conn, privacy.tokenizer(), privacy.policy())
    assert all(r.reconciled for r in results)


def _sync(audience: str, batch_size: int) -> None:
    from connectors.email.http_api import HttpEngine
    from connectors.warehouse.database import Warehouse
    from pipelines.resources import PrivacyResource
    from services.sync import sync_audience

    engine = HttpEngine(
        os.environ["REL_ENGINE_URL"],
        os.environ["REL_ENGINE_TOKEN"],
        os.environ["REL_ENGINE_SECRET"],
        os.environ["REL_ENGINE_CA_FILE"],
        max_retries=20,
        backoff_base=0.01,
        backoff_max=0.2,
    )
    cipher = PrivacyResource().vault_cipher()
    with Warehouse.from_env().connect() as conn:
        print("ready", flush=True)
        sync_audience(
            conn,
            engine,
            cipher,
            destination="sandbox",
            audience=audience,
            batch_size=batch_size,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.workers")
    sub = parser.add_subparsers(dest="work", required=True)
    ingest = sub.add_parser("ingest")
    ingest.add_argument("files", nargs="+")
    sync = sub.add_parser("sync")
    sync.add_argument("audience")
    sync.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args(argv)
    if args.work == "ingest":
        _ingest(args.files)
    else:
        _sync(args.audience, args.batch_size)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
