"""Run the SANDBOX email engine as a process: `python -m sandbox --state-dir DIR --port N`.

Credentials come from SANDBOX_ENGINE_TOKEN / SANDBOX_ENGINE_SIGNING_SECRET when set (never
from the command line, where other users could read them in the process list); otherwise
they are generated once and kept in DIR/credentials.json (0600).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from sandbox.engine import CREDENTIALS_FILE, SandboxEngine, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description="SANDBOX email engine (never production)."
    )
    parser.add_argument("--state-dir", required=True, help="folder for SQLite state and TLS")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fail-rate", type=float, default=0.0, help="injected 503 share")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per second")
    parser.add_argument("--allow-non-loopback", action="store_true")
    parser.add_argument(
        "--smtp-sink-port", type=int, default=None, help="deliver MIME mail to a local sink"
    )
    parser.add_argument(
        "--webhook-url", default=None, help="push events here (secret: SANDBOX_WEBHOOK_SECRET)"
    )
    parser.add_argument("--webhook-ca-file", default=None)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(message)s")

    def ready(engine: SandboxEngine) -> None:
        creds = (
            "from environment"
            if os.environ.get("SANDBOX_ENGINE_TOKEN")
            else str(engine.state_dir / CREDENTIALS_FILE)
        )
        print(
            f"SANDBOX email engine (not for production) listening on {engine.base_url}\n"
            f"  CA file:     {engine.ca_cert_path}\n"
            f"  credentials: {creds}",
            flush=True,
        )

    try:
        serve(
            args.state_dir,
            args.host,
            args.port,
            args.seed,
            token=os.environ.get("SANDBOX_ENGINE_TOKEN") or None,
            signing_secret=os.environ.get("SANDBOX_ENGINE_SIGNING_SECRET") or None,
            fail_rate=args.fail_rate,
            rate_limit=args.rate_limit,
            allow_non_loopback=args.allow_non_loopback,
            on_ready=ready,
            smtp_sink_port=args.smtp_sink_port,
            webhook_url=args.webhook_url,
            webhook_secret=os.environ.get("SANDBOX_WEBHOOK_SECRET") or None,
            webhook_ca_file=args.webhook_ca_file,
        )
    except (ValueError, OSError) as exc:
        print(f"SANDBOX engine: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
