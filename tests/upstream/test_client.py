"""How Qingbo's answers are read: which errors fail, retry, pause, or are ambiguous."""

from __future__ import annotations

import httpx
import pytest

from service.upstream.client import classify
from service.upstream.errors import (
    UpstreamAccountBlocked,
    UpstreamRejected,
    UpstreamRetryable,
)


def answer(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"message": f"m{status}", "code": f"c{status}"}}, headers=headers
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, UpstreamRejected),
        (404, UpstreamRejected),
        (401, UpstreamAccountBlocked),
        (402, UpstreamAccountBlocked),
        (429, UpstreamRetryable),
        (500, UpstreamRetryable),
        (503, UpstreamRetryable),
    ],
)
def test_classification(status: int, kind: type) -> None:
    error = classify(answer(status))
    assert isinstance(error, kind)
    assert (error.status, error.message, error.code) == (status, f"m{status}", f"c{status}")


def test_retry_after_is_read() -> None:
    error = classify(answer(429, {"Retry-After": "7"}))
    assert isinstance(error, UpstreamRetryable) and error.retry_after == 7.0
    assert classify(httpx.Response(200, json={})) is None
