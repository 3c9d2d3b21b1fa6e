"""Admin request and response bodies for teams and keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from service.catalog.generations import DEFAULT_ANSWER_VERSION, ApiVersion
from service.platform.types import SafeText, Storable

AlertUrl = Annotated[
    str, Field(min_length=8, max_length=2000, pattern=r"^https?://[^\s]+$"), Storable
]
TeamName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$"), Storable]
OpenDestinations = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=253), Storable]], Field(max_length=100)
]
_OPEN_DESTINATIONS = (
    "Destinations opened for this team's webhooks beyond the company's: CIDRs (10.20.0.0/16), "
    "exact host names (hooks.payments.internal) or *.suffix (any name below the suffix). "
    "Private, loopback and link-local addresses are closed unless opened (README Webhooks)"
)


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TeamName
    rpm_limit: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None
    max_concurrent_tasks: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None
    allowed_models: Annotated[list[SafeText], Field(max_length=100)] | None = Field(
        None, description="Models the team may use; null means every model"
    )
    alert_url: AlertUrl | None = Field(
        None, description="Receives signed budget-threshold webhooks (see README)"
    )
    api_version: ApiVersion = Field(
        DEFAULT_ANSWER_VERSION,
        description="Answer shape of the team's task answers, events and webhooks "
        "(a Qingbo-Version header overrides it per call)",
    )
    open_destinations: OpenDestinations = Field(
        default_factory=list, description=_OPEN_DESTINATIONS
    )


class TeamPatch(BaseModel):
    """Only the fields present change; null clears a limit."""

    model_config = ConfigDict(extra="forbid")

    name: TeamName | None = None
    rpm_limit: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None
    max_concurrent_tasks: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None
    allowed_models: Annotated[list[SafeText], Field(max_length=100)] | None = None
    alert_url: AlertUrl | None = None
    api_version: ApiVersion | None = None
    open_destinations: OpenDestinations | None = Field(
        None, description=_OPEN_DESTINATIONS + "; the list given replaces the team's"
    )


class Team(BaseModel):
    id: UUID
    name: str
    rpm_limit: int | None
    max_concurrent_tasks: int | None
    allowed_models: list[str] | None
    alert_url: str | None
    api_version: ApiVersion
    open_destinations: list[str] = Field(description=_OPEN_DESTINATIONS)
    webhook_secret: str
    created_at: datetime


class TeamList(BaseModel):
    data: list[Team]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100), Storable] = "default"
    rpm_limit: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = Field(
        None, description="Requests per minute for this key, inside the team's own limit"
    )
    expires_at: datetime | None = Field(
        None, description="When the key stops working (ISO 8601 with a zone)"
    )
    expires_in_days: Annotated[StrictInt, Field(ge=1, le=3650)] | None = Field(
        None, description="Or: days from now until it stops working"
    )


class IssuedKey(BaseModel):
    id: UUID
    name: str
    prefix: str
    key: str = Field(description="The API key; shown this once, stored only as a hash")
    rpm_limit: int | None
    team_id: UUID
    created_at: datetime
    expires_at: datetime | None


class KeyInfo(BaseModel):
    """A key as the admin API lists it: never the key itself."""

    id: UUID
    team_id: UUID
    name: str
    prefix: str
    rpm_limit: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(
        None, description="Last authenticated use, to the minute (written at most once a minute)"
    )


class KeyList(BaseModel):
    data: list[KeyInfo]
