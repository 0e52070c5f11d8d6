"""Normalizers that make identifiers comparable before they are tokenized.

The same person arrives as "JOSÉ  Núñez" from the EHR and "jose nunez" from the CRM; tokens
only match if both normalize to the same string first.
"""

from __future__ import annotations

import re
import unicodedata

_NON_LETTERS = re.compile(r"[^a-z]+")
_NON_DIGITS = re.compile(r"\D+")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def fold_accents(text: str) -> str:
    """'Núñez' -> 'Nunez': decompose and drop combining marks."""
    if text.isascii():  # ASCII has no decompositions nor combining marks: a no-op, fast
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalize_name(text: str | None) -> str | None:
    """Lower-case, accents folded, letters only: 'O'Brien-Zoë ' -> 'obrienzoe'."""
    if not text:
        return None
    folded = _NON_LETTERS.sub("", fold_accents(text).lower())
    return folded or None


def normalize_email(text: str | None) -> str | None:
    """Trimmed and lower-cased; None when it is not an address at all."""
    if not text:
        return None
    email = text.strip().lower()
    return email if _EMAIL.match(email) else None


def normalize_phone(text: str | None, default_country: str = "1") -> str | None:
    """E.164 for North American numbers ('+1' + 10 digits); other lengths kept as +digits."""
    if not text:
        return None
    digits = _NON_DIGITS.sub("", text)
    if len(digits) == 10:
        return f"+{default_country}{digits}"
    if len(digits) == 11 and digits.startswith(default_country):
        return f"+{digits}"
    if 8 <= len(digits) <= 15:
        return f"+{digits}"
    return None


def normalize_identifier(text: str | None) -> str | None:
    """MRNs and similar ids: trimmed, upper-cased, inner spaces removed."""
    if not text:
        return None
    value = "".join(text.split()).upper()
    return value or None
