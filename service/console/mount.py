"""Mounting the console on the API: its routes and static files, after every API route,
with no middleware (the submission hot path does not see it)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.config import Settings
from service.console import (
    auth_pages,
    key_pages,
    money_pages,
    ops_pages,
    task_pages,
    webhook_pages,
)
from service.console.sessions import configured_secret

STATIC = Path(__file__).parent / "static"


def mount_console(app: FastAPI, settings: Settings) -> None:
    app.state.console_secret = configured_secret(settings)
    for module in (auth_pages, task_pages, money_pages, key_pages, webhook_pages, ops_pages):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
