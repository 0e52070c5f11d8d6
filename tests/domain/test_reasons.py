"""The reason-code catalogue is documented once, and the document is current."""

from __future__ import annotations

from pathlib import Path

from domain.reasons import REASONS, catalogue_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "reason-codes.md"


def test_docs_list_every_reason_code():
    assert DOC.read_text() == catalogue_markdown(), "run: python -m domain.reasons > " + str(DOC)


def test_codes_are_upper_snake_case_and_texts_end_with_a_full_stop():
    for code, text in REASONS.items():
        assert code == code.upper() and " " not in code
        assert text.endswith(".")
