"""SANDBOX fault injection: seeded transient 503s and a per-second rate limit (429).

Injected 503s come in two flavours, chosen by the same seeded RNG:
- "before": the request is refused before anything is applied;
- "after": the write is applied and committed (including its idempotency record), then the
  answer is "lost" as a 503. This is the case that makes idempotency keys necessary: a client
  that retries with the same key must get the stored answer, not a second application.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from typing import Literal

Fault = Literal["none", "before", "after"]


class FaultInjector:
    """Decides, per request, whether to inject a transient 503 (deterministic for a seed)."""

    def __init__(self, fail_rate: float, seed: int) -> None:
        if not 0.0 <= fail_rate < 1.0:
            raise ValueError("fail_rate must be in [0, 1)")
        self.fail_rate = fail_rate
        # Its own stream, offset from the seed: the event simulation must not shift when
        # fault injection is switched on or off.
        self._rng = random.Random(f"faults:{seed}")
        self._lock = threading.Lock()

    def decide(self) -> Fault:
        if self.fail_rate == 0.0:
            return "none"
        with self._lock:
            if self._rng.random() >= self.fail_rate:
                return "none"
            return "before" if self._rng.random() < 0.5 else "after"


class RateLimiter:
    """Fixed one-second windows: at most `limit` accepted requests per window."""

    def __init__(self, limit: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        if limit is not None and limit < 1:
            raise ValueError("rate_limit must be a positive integer or None")
        self.limit = limit
        self._clock = clock
        self._window = -1
        self._count = 0
        self._lock = threading.Lock()

    def check(self) -> int | None:
        """None when the request may proceed, else the Retry-After value in whole seconds."""
        if self.limit is None:
            return None
        with self._lock:
            now = self._clock()
            window = math.floor(now)
            if window != self._window:
                self._window, self._count = window, 0
            if self._count < self.limit:
                self._count += 1
                return None
            # HTTP delta-seconds are integers; 1 s always reaches the next window.
            return max(1, math.ceil(window + 1 - now))
