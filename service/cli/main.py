"""The `qingbo-gateway` command: every role of the service, plus the dev stack, the admin
commands and the human CLI (click)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from service.cli.admin import admin
from service.cli.catalog import catalog
from service.cli.client import CLIENT_COMMANDS
from service.config import RETIRED_SETTINGS, Settings, get_settings, weak_tokens


def configure_logging_for(settings: Settings) -> None:
    from service.platform.logs import configure_logging

    configure_logging(settings.log_level, log_format=settings.log_format)


def check_configuration() -> Settings:
    """The settings and the price table, or exit 2 naming what is wrong: a bad setting must
    stop a role at start, not surface as 500s on every request later."""
    from pydantic import ValidationError

    from service.catalog.price_table import PriceTableError, load_price_table

    retired = [f"{name}: {why}" for name, why in RETIRED_SETTINGS.items() if name in os.environ]
    for line in retired:
        print(f"configuration error: {line}", file=sys.stderr)
    if retired:
        sys.exit(2)
    try:
        settings = get_settings()
        load_price_table(settings.price_table)
    except ValidationError as exc:
        for error in exc.errors():
            name = "QGW_" + "_".join(str(p) for p in error["loc"]).upper() + ": "
            message = error["msg"].removeprefix("Value error, ")
            print(f"configuration error: {name if error['loc'] else ''}{message}", file=sys.stderr)
        sys.exit(2)
    except (PriceTableError, OSError, ValueError) as exc:
        print(f"configuration error: QGW_PRICE_TABLE: {exc}", file=sys.stderr)
        sys.exit(2)
    from service.catalog.document import CatalogError
    from service.catalog.engine import load_catalog

    try:  # a bad catalog stops the role at start, naming what is wrong in it
        load_catalog(settings.catalog_file)
    except CatalogError as exc:
        print(f"configuration error: QGW_CATALOG_FILE: {exc}", file=sys.stderr)
        sys.exit(2)
    return settings


def start_role() -> Settings:
    """The checks and logging of a serving role (api, worker, simulator, dev)."""
    settings = check_configuration()
    configure_logging_for(settings)
    return settings


def refuse_weak_tokens(settings: Settings) -> None:
    """Exit 2 naming each admin or metrics token that is set but guessable: they guard
    every team's keys, budgets and spend."""
    problems = weak_tokens(settings)
    for line in problems:
        print(f"configuration error: {line}", file=sys.stderr)
    if problems:
        sys.exit(2)


@click.group(help="Qingbo Gateway: every role of the service, the dev stack and the CLI.")
def cli() -> None:
    pass


@cli.command(help="Serve the HTTP API.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
def api(host: str, port: int, workers: int) -> None:
    import uvicorn

    refuse_weak_tokens(start_role())
    if workers > 1:
        _multiprocess_metrics_dir()
    uvicorn.run(
        "service.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        # No access log: it would print query strings, and callback URLs carry tokens.
        access_log=False,
        log_config=None,
        proxy_headers=True,
    )


def _multiprocess_metrics_dir() -> None:
    """N uvicorn processes answer on one port, so any of them may get the scrape: they
    share metric samples through files (prometheus-client multiprocess mode)."""
    import shutil
    import tempfile
    from pathlib import Path

    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="qgw-metrics-"))
    if path.exists():
        shutil.rmtree(path)  # samples of an earlier run would add up with this one's
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


@cli.command(help="Run an arq worker (submission, tracking, reconciler).")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
def worker(burst: bool) -> None:
    import uvloop

    from service.worker import build_worker

    settings = start_role()
    refuse_weak_tokens(settings)
    uvloop.install()
    build_worker(settings, burst=burst).run()


@cli.command(help="Upgrade the database schema.")
@click.option("--revision", default="head", show_default=True)
def migrate(revision: str) -> None:
    from service.platform.db import migrate as run_migrations

    settings = get_settings()
    configure_logging_for(settings)
    run_migrations(settings.database_url, revision)
    click.echo(f"migrated to {revision}")


@cli.command(help="Run the Qingbo simulator.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8100, show_default=True)
@click.option("--api-key", default=None, help="Accept only this key (else any).")
@click.option(
    "--api-version",
    type=click.Choice(["2026-04", "2026-09"]),
    default=None,
    help="The generation of Qingbo's API to follow (default: QGW_QINGBO_API_VERSION).",
)
@click.option(
    "--base-url",
    default=None,
    help="Where others reach it, for its links (videos, poll URLs); default http://HOST:PORT.",
)
def simulator(
    host: str, port: int, api_key: str | None, api_version: str | None, base_url: str | None
) -> None:
    import uvicorn

    from service.catalog.engine import load_catalog
    from service.catalog.price_table import load_price_table
    from service.simulator.app import create_simulator_app

    settings = start_role()
    app = create_simulator_app(
        api_key=api_key or os.environ.get("QGW_SIM_API_KEY") or None,
        base_url=base_url or f"http://{host}:{port}",
        api_version=api_version or settings.qingbo_api_version,
        prices=load_price_table(settings.price_table),
        catalog=load_catalog(settings.catalog_file),
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@cli.command(help="The whole stack on this machine, nothing installed needed.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--data-dir", default=".qgw-dev", show_default=True)
def dev(port: int, data_dir: str) -> None:
    from service.cli.dev import run_dev_stack

    # A person watches it: readable lines (JSON stays the default elsewhere).
    os.environ.setdefault("QGW_LOG_FORMAT", "pretty")
    get_settings.cache_clear()
    start_role()
    run_dev_stack(port=port, data_dir=data_dir)


@cli.command(help="Print the OpenAPI spec as YAML.")
def openapi() -> None:
    from service.app import create_app
    from service.platform.openapi import openapi_yaml

    sys.stdout.write(openapi_yaml(create_app(Settings())))


cli.add_command(admin)
cli.add_command(catalog)
for command in CLIENT_COMMANDS:
    cli.add_command(command)


def main(argv: list[str] | None = None) -> Any:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["admin"]:  # the roles configure their own; the human CLI only prints
        configure_logging_for(get_settings())
    return cli.main(args=args, prog_name="qingbo-gateway")


if __name__ == "__main__":
    main()
