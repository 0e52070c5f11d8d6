"""Build HL7 v2 ACK messages with hl7apy: sender/receiver swapped, MSA, and ERR with a reason code.

The ACK never carries a value from the acknowledged message except its routing header (MSH-3
to MSH-6, MSH-11) and its control id (MSA-2); the error is described by the hub's reason code
and HL7 table 0357, never by the offending value.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Literal

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message

from connectors.hl7.errors import Hl7Error
from connectors.hl7.fastparse import FastMsh, parse_delimiters
from domain.reasons import REASONS

AckCode = Literal["AA", "AE", "AR"]
DEFAULT_VERSION = "2.5"
# Versions hl7apy 1.3.5 ships tables for.
_APY_VERSIONS = ("2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8")
_APY_VERSIONS += ("2.8.1", "2.8.2")
# hl7apy's v2.8 ERR definition lacks the withdrawn ERR-1, so its to_er7() shifts every ERR
# field one place left. The v2.7 tables serialise correctly and the v2.7 ERR layout is the
# v2.8 one, so 2.8.x ACKs are built with them; MSH-12 still echoes the sender's version.
_BUILD_AS = {"2.8": "2.7", "2.8.1": "2.7", "2.8.2": "2.7"}
# Reason code -> HL7 table 0357 (message error condition codes).
_HL7_ERROR = {
    "HL7_MISSING_MSH": ("100", "Segment sequence error"),
    "HL7_INVALID": ("100", "Segment sequence error"),
    "HL7_BAD_DELIMITERS": ("100", "Segment sequence error"),
    "HL7_MISSING_PID": ("101", "Required field missing"),
    "MISSING_FIELD": ("101", "Required field missing"),
    "BAD_DATE": ("102", "Data type error"),
    "BAD_VALUE": ("102", "Data type error"),
    "BAD_ENCODING": ("102", "Data type error"),
    "RECORD_TOO_LARGE": ("104", "Value too long"),
    "HL7_UNSUPPORTED_TYPE": ("200", "Unsupported message type"),
}
_INTERNAL_ERROR = ("207", "Application internal error")
_LEAD = re.compile(r"^[\ufeff\x0b\s]+")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _incoming_msh(message_text: str) -> FastMsh | None:
    """The acknowledged message's MSH, or None when it has no usable one."""
    first = re.split(r"[\r\n]", _LEAD.sub("", message_text), maxsplit=1)[0]
    if not first.startswith("MSH"):
        return None
    try:
        delimiters = parse_delimiters(first)
    except Hl7Error:
        return None
    return FastMsh("MSH", first, delimiters)


def _raw(msh: FastMsh | None, field: int) -> str:
    """A field exactly as sent (still escaped), so it is echoed byte for byte."""
    return msh.raw(field) if msh is not None else ""


def _reason_text(reason_code: str, msh: FastMsh | None) -> str:
    """The operator text for a reason, without any character that is a delimiter here."""
    text = REASONS[reason_code]
    specials = "|^~\\&" if msh is None else "".join(msh.d)
    return "".join(ch for ch in text if ch not in specials)[:80]


def build_ack(
    message_text: str,
    code: AckCode,
    reason_code: str | None = None,
    *,
    control_id: str | None = None,
    now: datetime | None = None,
) -> str:
    """An ER7 ACK (segments separated by CR, no MLLP framing) for `message_text`.

    `code` is AA (accepted), AE (error) or AR (rejected); `reason_code` (a domain.reasons
    code) adds an ERR segment: ERR-3 from HL7 table 0357, ERR-4 severity E, ERR-5 the reason
    code with its description (v2.5+); before v2.5, MSA-3 and ERR-1 carry them instead.
    """
    if code not in ("AA", "AE", "AR"):
        raise ValueError("code must be AA, AE or AR")
    if reason_code is not None and reason_code not in REASONS:
        raise ValueError("unknown reason code")
    msh = _incoming_msh(message_text)
    d = msh.d if msh is not None else None
    version = msh.get(12).strip() if msh is not None else ""
    if version not in _APY_VERSIONS:
        version = DEFAULT_VERSION
    enc = {"FIELD": "|", "COMPONENT": "^", "REPETITION": "~", "ESCAPE": "\\", "SUBCOMPONENT": "&"}
    if d is not None:
        enc = {
            "FIELD": d.field,
            "COMPONENT": d.comp,
            "REPETITION": d.rep,
            "ESCAPE": d.esc,
            "SUBCOMPONENT": d.sub,
        }
    comp, sub = enc["COMPONENT"], enc["SUBCOMPONENT"]
    ack = Message(
        "ACK",
        version=_BUILD_AS.get(version, version),
        validation_level=VALIDATION_LEVEL.TOLERANT,
        encoding_chars={**enc, "SEGMENT": "\r", "GROUP": "\r"},
    )
    # The ACK goes back where the message came from: receiver and sender swap places.
    for ack_field, source_field in ((3, 5), (4, 6), (5, 3), (6, 4)):
        value = _raw(msh, source_field)
        if value:
            setattr(ack.msh, f"msh_{ack_field}", value)
    ack.msh.msh_7 = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
    trigger = msh.get(9, 2).strip() if msh is not None else ""
    has_structure = _version_key(version) >= (2, 3, 1)
    if trigger.isalnum() and has_structure:
        ack.msh.msh_9 = f"ACK{comp}{trigger}{comp}ACK"
    elif trigger.isalnum():
        ack.msh.msh_9 = f"ACK{comp}{trigger}"
    else:
        ack.msh.msh_9 = "ACK"
    ack.msh.msh_10 = control_id or f"ACK{uuid.uuid4().hex[:17]}"
    ack.msh.msh_11 = _raw(msh, 11) or "P"
    ack.msh.msh_12 = version
    ack.msa.msa_1 = code
    incoming_id = _raw(msh, 10)
    if incoming_id:
        ack.msa.msa_2 = incoming_id
    if reason_code is not None:
        _add_error(ack, version, reason_code, _reason_text(reason_code, msh), comp, sub)
    return ack.to_er7()


def _add_error(ack: Message, version: str, reason: str, text: str, comp: str, sub: str) -> None:
    """ERR (and, before v2.5, MSA-3) naming the reason code; never a value from the message."""
    hl7_code, hl7_text = _HL7_ERROR.get(reason, _INTERNAL_ERROR)
    key = _version_key(version)
    if key >= (2, 5):
        ack.add_segment("ERR")
        ack.err.err_3 = f"{hl7_code}{comp}{hl7_text}{comp}HL70357"
        ack.err.err_4 = "E"
        ack.err.err_5 = f"{reason}{comp}{text}{comp}99AUDHUB"
        return
    ack.msa.msa_3 = reason  # MSA-3 text message: the pre-2.5 place for a short error text
    if key >= (2, 3):  # ERR-1 (ELD) exists from v2.3; its 4th component codes the error
        ack.add_segment("ERR")
        ack.err.err_1 = f"{comp * 3}{hl7_code}{sub}{hl7_text}{sub}HL70357"
