"""How an upstream call went wrong, in the terms the gateway acts on."""

from __future__ import annotations


class UpstreamError(Exception):
    """Base: `status` is Qingbo's HTTP status (0 when there was no answer)."""

    def __init__(self, message: str, *, status: int = 0, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class UpstreamRejected(UpstreamError):
    """400/404 and other 4xx: permanent for this task."""


class UpstreamAccountBlocked(UpstreamError):
    """401 (bad key) or 402 (balance exhausted): pause every submission, fail nothing."""


class UpstreamRetryable(UpstreamError):
    """429, 5xx, or a request that certainly never reached Qingbo: retry with backoff."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class UpstreamAmbiguous(UpstreamError):
    """The request may have reached Qingbo but no answer came back (read timeout, reset)."""
