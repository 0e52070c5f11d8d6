"""SANDBOX engine API errors: one exception type that maps straight onto an HTTP answer."""

from __future__ import annotations


class ApiError(Exception):
    """A request the sandbox answers with a non-2xx status and a JSON error body.

    `message` is sent to the client and logged, so it must never carry a value from the
    request body (no emails, no field values): name the field, not its contents.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        # Close the connection after answering: needed when the body was not read in full,
        # otherwise the unread bytes would be parsed as the next keep-alive request.
        self.close = close
