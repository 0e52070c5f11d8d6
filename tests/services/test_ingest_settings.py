"""The process settings a bulk load changes are its own: restored after it, also on error."""

from __future__ import annotations

import gc
import sys

import pytest

from services.ingest import bulk_load_gc, prompt_thread_switches


def test_a_load_shortens_thread_switches_and_restores_them_after_an_error():
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), prompt_thread_switches(0.0005):
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        raise RuntimeError("the load failed")
    assert sys.getswitchinterval() == before


def test_a_load_restores_the_collector_after_an_error():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), bulk_load_gc(50_000):
        assert gc.get_threshold()[0] >= 50_000
        raise RuntimeError("the load failed")
    assert gc.get_threshold() == before
