"""The `qingbo-gateway` command: every role of the service, plus the dev stack."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from service.config import RETIRED_SETTINGS, Settings, get_settings


def _configure_logging(settings: Settings) -> None:
    from service.logs import configure_logging

    configure_logging(settings.log_level)


def cmd_api(args: argparse.Namespace) -> None:
    import uvicorn

    if args.workers > 1:
        _multiprocess_metrics_dir()
    uvicorn.run(
        "service.app:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
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
    import os
    import shutil
    import tempfile
    from pathlib import Path

    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="qgw-metrics-"))
    if path.exists():
        shutil.rmtree(path)  # samples of an earlier run would add up with this one's
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def cmd_worker(args: argparse.Namespace) -> None:
    import uvloop

    from service.worker import build_worker

    uvloop.install()
    build_worker(get_settings(), burst=args.burst).run()


def cmd_migrate(args: argparse.Namespace) -> None:
    from service.db import migrate

    migrate(get_settings().database_url, args.revision)
    print(f"migrated to {args.revision}")


def cmd_simulator(args: argparse.Namespace) -> None:
    import os

    import uvicorn

    from service.catalog.models import load_price_table
    from service.simulator.app import create_simulator_app

    settings = get_settings()
    api_key = args.api_key or os.environ.get("QGW_SIM_API_KEY") or None
    app = create_simulator_app(
        api_key=api_key,
        base_url=f"http://{args.host}:{args.port}",
        api_version=args.api_version or settings.qingbo_api_version,
        prices=load_price_table(settings.price_table),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


def cmd_openapi(args: argparse.Namespace) -> None:
    from service.app import create_app
    from service.openapi import openapi_yaml

    sys.stdout.write(openapi_yaml(create_app(Settings())))


def cmd_dev(args: argparse.Namespace) -> None:
    from service.dev import run_dev_stack

    run_dev_stack(port=args.port, data_dir=args.data_dir)


def cmd_admin(args: argparse.Namespace) -> None:
    from service import admin_cli

    sys.exit(asyncio.run(admin_cli.run(args, get_settings())))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qingbo-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1)
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run an arq worker (submission, tracking, reconciler)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(func=cmd_worker)

    migrate = sub.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=cmd_migrate)

    sim = sub.add_parser("simulator", help="run the Qingbo simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8100)
    sim.add_argument("--api-key", default=None, help="accept only this key (else any)")
    sim.add_argument(
        "--api-version",
        choices=["2026-04", "2026-09"],
        default=None,
        help="the generation of Qingbo's API to follow (default: QGW_QINGBO_API_VERSION)",
    )
    sim.set_defaults(func=cmd_simulator)

    dev = sub.add_parser("dev", help="the whole stack on this machine, nothing installed needed")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--data-dir", default=".qgw-dev")
    dev.set_defaults(func=cmd_dev)

    openapi = sub.add_parser("openapi", help="print the OpenAPI spec as YAML")
    openapi.set_defaults(func=cmd_openapi)

    admin = sub.add_parser("admin", help="operator commands against the database")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_sub.add_parser("create-team", help="create a team and print a key for it")
    create.add_argument("--name", required=True)
    create.add_argument("--key-name", default="default")
    admin_sub.add_parser(
        "verify-ledger",
        help="prove every budget window equals the sum of its ledger entries (exit 1 if not)",
    )
    keys = admin_sub.add_parser("keys", help="list, issue or revoke a team's API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    listed = keys_sub.add_parser("list", help="a team's keys (never the keys themselves)")
    listed.add_argument("--team", required=True, help="team id")
    issued = keys_sub.add_parser("issue", help="issue a key and print it (once)")
    issued.add_argument("--team", required=True, help="team id")
    issued.add_argument("--name", default="default")
    issued.add_argument("--expires-in-days", type=int, default=None)
    revoked = keys_sub.add_parser("revoke", help="revoke a key at once")
    revoked.add_argument("key_id")
    backfill = admin_sub.add_parser(
        "archive",
        help="archive the videos of tasks completed since DATE whose Qingbo links still work",
    )
    backfill.add_argument("--since", required=True, help="a date or time, e.g. 2026-11-01")
    trail = admin_sub.add_parser("audit", help="the audit trail of admin changes, newest first")
    trail.add_argument("--target", default=None, help="a team or key id, or company")
    trail.add_argument("--action", default=None)
    trail.add_argument("--limit", type=int, default=20)
    admin.set_defaults(func=cmd_admin)

    from service.cli import add_client_commands

    add_client_commands(sub)
    return parser


SERVING_ROLES = ("api", "worker", "simulator", "dev")


def check_configuration() -> Settings:
    """The settings and the price table, or exit 2 naming what is wrong: a bad setting must
    stop a role at start, not surface as 500s on every request later."""
    from pydantic import ValidationError

    from service.catalog.models import PriceTableError, load_price_table

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
    return settings


def main(argv: list[str] | None = None) -> Any:
    args = build_parser().parse_args(argv)
    if args.command in SERVING_ROLES:
        check_configuration()
    if not getattr(args, "client", False):  # the human CLI prints, it does not log JSON
        _configure_logging(get_settings())
    return args.func(args)


if __name__ == "__main__":
    main()
