"""SANDBOX delivery seam: where a simulated send would hand a real MIME message to a sink.

TODO(smtp-sink issue): render a MIME message per send and deliver it over SMTP to a local
sink (aiosmtpd in dev extras) so content and headers can be asserted in tests. Until then the
engine calls `NoDelivery`, and engagement comes only from `sandbox.simulate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class DeliverySink(Protocol):
    """Receives one send after it is committed (never inside the database transaction)."""

    def deliver(
        self, audience_id: str, external_id: str, email: str, fields: Mapping[str, str | None]
    ) -> None: ...


class NoDelivery:
    """The default sink: sends are simulated only, nothing leaves the process."""

    def deliver(
        self, audience_id: str, external_id: str, email: str, fields: Mapping[str, str | None]
    ) -> None:
        return None
