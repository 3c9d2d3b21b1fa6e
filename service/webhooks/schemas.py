"""The delivery log as apps and admins see it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_ERROR = (
    "Why the attempt failed, as a generic class: timeout, connection_refused, "
    "connection_failed, dns_failure, tls_error, blocked_destination (the destination is "
    "not open to the team), http_error (a non-2xx answer), protocol_error, interrupted; "
    "'error' for attempts logged before classes existed"
)


class Attempt(BaseModel):
    attempt: int
    started_at: datetime
    latency_ms: int | None
    status_code: int | None = Field(description="Null when no HTTP answer came")
    response_headers: dict[str, str] = Field(
        description="The receiver's answer headers (cookies and credentials left out)"
    )
    error: str | None = Field(description=_ERROR)


class AdminAttempt(Attempt):
    response_excerpt: str | None = Field(description="The first 512 bytes of the answer")
    error_detail: str | None = Field(
        None, description="What failed, for operators (may name resolved addresses)"
    )


class Delivery(BaseModel):
    id: str = Field(description="The webhook-id header: the same on every attempt")
    event: str
    url: str
    status: Literal["pending", "delivered", "failed", "stopped"] = Field(
        description="pending: an attempt is due or scheduled; failed: retries used up or "
        "destination blocked; stopped: the receiver answered 410 Gone"
    )
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None = Field(description="The last attempt's error class")
    delivered_at: datetime | None
    created_at: datetime
    attempt_log: Sequence[Attempt]


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Delivery]


class AdminDelivery(Delivery):
    last_error_detail: str | None = Field(None, description="The last attempt's error detail")
    attempt_log: Sequence[AdminAttempt]


class AdminDeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdminDelivery]


class RedeliverFailed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime = Field(description="Re-send the team's failed events created since then")


class Redelivered(BaseModel):
    redelivered: int


class RotatedSecret(BaseModel):
    team_id: str
    webhook_secret: str
    previous_secret_expires_at: datetime = Field(
        description="Until then webhooks carry signatures by the old and the new secret"
    )
