"""HL7 v2 connector: files or streams of ER7 messages in, canonical SourceRecords or Rejections out.

API
---
``read_hl7(uri) -> Iterator[Hl7Message]`` (also ``read_hl7_chunks(chunks)`` and
``read_hl7_bytes(data)``). Every message in the stream yields exactly one ``Hl7Message``:

* ``index``: 1-based count of messages, rejected ones included;
* ``position``: ``"message 3 (MSH-10 MSG00003)"`` (the control id only when it looks like an
  id); every record's position starts with it (``"... PID"``, ``"... OBX #2"``);
* ``control_id``, ``message_type`` (``"ADT^A04"``, from MSH-9, never from the file name);
* either ``records`` (a non-empty list of SourceRecord) or ``rejection`` (one Rejection with a
  reason code from domain.reasons and a message that names fields, never values).

So a loader counts ``read == loaded + quarantined`` per message (``Hl7Tally`` does this);
nothing is skipped silently. Content before the first MSH that is not a batch header counts
as one message rejected with HL7_MISSING_MSH; FHS/BHS/BTS/FTS batch segments are not messages.

What each message type yields is listed in ``mapping``; ``merge`` (ADT^A40) is an entity of
its own: subject_system, subject_id (surviving patient), prior_subject_id (MRG-1).

Timestamps without a UTC offset are taken as UTC (HL7 leaves the zone to the sender's
configuration, which the hub does not know); dates (birth, vaccination) are taken as written.

Modules: ``framing`` (stream -> messages), ``fastparse`` (string splitting by the declared
delimiters), ``mapping`` (message -> records), ``reader`` (the loop above), ``reference``
(the same reads through hl7apy, for equivalence tests), ``ack`` (ACK builder), ``bench``.
"""

from typing import Any

from connectors.hl7.reader import (
    Hl7Message,
    Hl7Tally,
    read_hl7,
    read_hl7_bytes,
    read_hl7_chunks,
)

__all__ = [
    "Hl7Message",
    "Hl7Tally",
    "build_ack",
    "read_hl7",
    "read_hl7_bytes",
    "read_hl7_chunks",
]


def __getattr__(name: str) -> Any:
    # build_ack needs hl7apy, a slow import that the reading path never uses.
    if name == "build_ack":
        from connectors.hl7.ack import build_ack

        return build_ack
    raise AttributeError(name)
