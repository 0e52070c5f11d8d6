"""Retry policy for assets that talk to the outside (files, the engine): transient failures
(a network blip, a 5xx the adapter gave up on, a dropped database connection) heal on retry.

Retrying is safe because every such step is idempotent by construction: ingest loads a file
whole or not at all and skips files already loaded; a sync resumes from its ledger with the
same idempotency keys; the feedback read commits events and cursor together.
"""

import dagster as dg

IO_RETRY = dg.RetryPolicy(
    max_retries=3,
    delay=5,  # seconds: 5, 10, 20 with exponential backoff, jittered so pods do not stampede
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)
