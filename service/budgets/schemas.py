"""Budget, usage and estimate bodies. Money is a decimal string in USD at the edge."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

Window = Literal["day", "week", "month", "total"]
Scope = Literal["company", "team", "key"]
UsdAmount = Annotated[
    str,
    Field(
        pattern=r"^\d{1,9}(\.\d{1,6})?$",
        description="US dollars as a decimal string, at most 6 decimals",
        examples=["25.00"],
    ),
]


class BudgetLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: Window = Field(description="Calendar day/week (Monday)/month, or all time")
    limit_usd: UsdAmount


class BudgetsPut(BaseModel):
    """The complete set of budgets of a scope: windows left out are removed."""

    model_config = ConfigDict(extra="forbid")

    budgets: Annotated[list[BudgetLimit], Field(max_length=4)]


class ModelSpend(BaseModel):
    model: str
    spent_usd: str
    reserved_usd: str


class _BudgetFigures(BaseModel):
    scope: Scope
    window: Window
    limit_usd: str
    spent_usd: str
    reserved_usd: str
    remaining_usd: str
    resets_at: datetime | None = Field(description="Null for the 'total' window")


class BudgetStanding(_BudgetFigures):
    used_percent: int = Field(description="(spent + reserved) / limit, rounded down")
    starts_at: datetime | None = Field(description="Null for the 'total' window")
    key_id: UUID | None = None
    key_name: str | None = None
    by_model: list[ModelSpend] = []


class Budgets(BaseModel):
    budgets: list[BudgetStanding]


class SpendWindow(BaseModel):
    """The team's money in one current window, whether or not a budget covers it."""

    window: Literal["day", "week", "month"]
    starts_at: datetime
    resets_at: datetime
    spent_usd: str = Field(description="Charged for the team's tasks admitted in the window")
    reserved_usd: str = Field(description="Held by the team's tasks still queued or processing")
    tasks: int = Field(description="Tasks admitted in the window")


class Usage(BaseModel):
    team_id: UUID
    spend: list[SpendWindow] = Field(
        description="Day, week and month in QGW_BUDGET_TIMEZONE, with or without budgets"
    )
    budgets: list[BudgetStanding]
    max_concurrent_tasks: int | None
    active_tasks: int = Field(description="Tasks queued or processing now")


class BudgetCheck(_BudgetFigures):
    fits: bool


class Estimate(BaseModel):
    model: str
    family: str | None = None
    catalog_digest: str | None = Field(None, description="The catalog the price comes from")
    resolution: str | None = Field(None, description="As asked (null: the model's default)")
    duration: int | None = Field(None, description="As asked (null: the model's default)")
    cost_usd: str = Field(description="The reservation: the most the task can cost")
    fits: bool = Field(description="Whether every budget that covers the task has room now")
    budgets: list[BudgetCheck]


class Dispute(BaseModel):
    """Qingbo reported more than the cap (the reservation times QGW_CHARGE_CAP_FACTOR):
    the budgets were charged the cap; the rest waits for an admin."""

    id: int
    task_id: str
    team_id: UUID
    team_name: str | None
    model: str
    status: Literal["open", "accepted", "rejected"]
    reserved_usd: str = Field(description="What the task reserved (the price table's estimate)")
    reported_usd: str = Field(description="What Qingbo reported it cost")
    charged_usd: str = Field(description="What the budgets were charged when it settled")
    disputed_usd: str = Field(description="reported - charged: charged to budgets if accepted")
    created_at: datetime
    resolved_at: datetime | None


class Disputes(BaseModel):
    disputes: list[Dispute]
