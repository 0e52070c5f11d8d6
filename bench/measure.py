"""Run one measurement in a forked child, so each figure has its own peak RSS.

The child runs a stage function that times its own measured region (setup stays outside)
and returns a dict with at least `seconds` and `records`; the child adds its peak resident
set size (VmHWM, reset by the kernel at fork) and sends the dict back through a pipe.
The parent stays lean (no polars, dbt or fhir.resources imported) so a child's peak RSS is
mostly its own work; `idle_child_rss_mb()` reports the floor every child starts from.
"""

from __future__ import annotations

import cProfile
import io
import multiprocessing as mp
import os
import pstats
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

StageResult = dict[str, Any]


class MeasurementError(RuntimeError):
    """The measured code raised (or the child died); the message names the exception."""


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (VmHWM from /proc, else ru_maxrss)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(conn, fn: Callable[..., StageResult], args: tuple, profile: bool) -> None:
    try:
        started = time.perf_counter()
        profilers = _profile_all_threads() if profile else []
        out = fn(*args)
        if profilers:
            profilers[0].disable()
            threading.setprofile(None)
            out["profile"] = _profile_text(profilers)
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
        out["wall_seconds"] = time.perf_counter() - started
        conn.send(("ok", out))
    except BaseException as exc:  # reported to the parent, which records the stage as failed
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"))
    finally:
        conn.close()


def _profile_all_threads() -> list[cProfile.Profile]:
    """A profiler for this thread, enabled, and one for each thread started from now on.

    The stages do their work in threads (ingest reads files in two lanes, each with a
    writer thread), which a profiler of the calling thread alone would see only waiting.
    A thread's first profile event enables its own profiler, which replaces the hook.
    """
    profilers = [cProfile.Profile()]

    def start_in_thread(frame: Any, event: str, arg: Any) -> None:
        profiler = cProfile.Profile()
        profilers.append(profiler)
        profiler.enable()

    threading.setprofile(start_in_thread)
    profilers[0].enable()
    return profilers


def _profile_text(profilers: list[cProfile.Profile], top: int = 25) -> str:
    """The threads' profiles added up; waiting on locks shows as `acquire`."""
    buffer = io.StringIO()
    stats = pstats.Stats(profilers[0], stream=buffer)
    for profiler in profilers[1:]:
        stats.add(profiler)
    stats.sort_stats("tottime").print_stats(top)
    return buffer.getvalue()


TIMEOUT = 3 * 3600.0  # a child that takes longer is stuck, not slow: stop it


def run_isolated(
    fn: Callable[..., StageResult], *args: Any, profile: bool = False, timeout: float = TIMEOUT
) -> StageResult:
    """fn(*args) in a forked child; its result plus `peak_rss_mb` and `wall_seconds`."""
    load_before = os.getloadavg()[0]
    ctx = mp.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(sender, fn, args, profile))
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            process.kill()
            process.join()
            raise MeasurementError(f"measurement did not finish within {timeout:,.0f} s")
        status, payload = receiver.recv()
    except EOFError:
        process.join()
        raise MeasurementError(f"measurement process died (exit code {process.exitcode})") from None
    finally:
        receiver.close()
    process.join()
    if status != "ok":
        raise MeasurementError(payload)
    # Other work on the machine competes for the cores: keep the load beside the figure.
    payload["load_1m"] = round(max(load_before, os.getloadavg()[0]), 2)
    return payload


def _idle() -> StageResult:
    return {"seconds": 0.0, "records": 0}


def idle_child_rss_mb() -> float:
    """The peak RSS of a child that does nothing: the floor under every figure."""
    return run_isolated(_idle)["peak_rss_mb"]
