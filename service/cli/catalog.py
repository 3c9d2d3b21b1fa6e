"""`qingbo-gateway catalog ...`: an operator's commands for catalog documents.

- `check FILE`: validate a document offline (exit 0, or 1 naming what is wrong);
- `show`: print the document in force (the database's, else this installation's own);
- `diff [OLD] NEW`: what NEW changes against OLD (default: the one in force);
- `verify-prices [--url QUOTE_URL]`: ask the vendor's public quote for every model and
  tier in force and print each difference (exit 1 on any).

A FILE is one JSON document (docs/catalog-format.md), or GET /admin/catalog's answer (its
`document` is taken), so what an operator downloads, edits and checks is what they PUT.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import asyncpg
import click
import orjson

from service.catalog import repository as store
from service.catalog.diff import diff_documents
from service.catalog.document import CatalogError
from service.catalog.engine import Catalog, load_catalog
from service.catalog.quotes import QuoteCase, quote_cases
from service.catalog.refresh import compile_text
from service.catalog_admin.service import InvalidCatalog, compile_document
from service.config import get_settings
from service.platform.db import create_pool
from service.platform.money import format_usd
from service.upstream.quote import (
    NoQuote,
    QuoteClient,
    QuoteRefusal,
    build_quote_client,
    quote_url,
)

# An operator's one-off run against the vendor: patient, but not for ever.
VERIFY_TIMEOUT_SECONDS = 30


def fail(message: str, status: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(status)


def read_document(path: str) -> Catalog:
    """The document in `path`, checked whole (exit 1 naming what is wrong)."""
    try:
        loaded = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")
    except orjson.JSONDecodeError as exc:
        fail(f"{path}: not a JSON document ({exc})")
    if isinstance(loaded, dict) and "document" in loaded and "models" not in loaded:
        loaded = loaded["document"]  # GET /admin/catalog's answer, as downloaded
    try:  # the same checks as PUT /admin/catalog
        return compile_document(loaded)
    except InvalidCatalog as exc:
        fail(f"{path}: {exc.message}")
    raise AssertionError("unreachable")


def in_force() -> Catalog:
    """The catalog in force: the newest document in the database, else this
    installation's own (QGW_CATALOG_FILE, or the shipped one)."""
    settings = get_settings()

    async def newest() -> Any:
        pool = await create_pool(settings.database_url, min_size=1, max_size=1)
        try:
            return await store.newest(pool)
        finally:
            await pool.close()

    try:
        row = asyncio.run(newest())
    except (OSError, asyncpg.PostgresError) as exc:
        fail(f"the database (QGW_DATABASE_URL) cannot be read: {exc}", 2)
    try:
        return compile_text(row["document"]) if row else load_catalog(settings.catalog_file)
    except CatalogError as exc:
        fail(f"the catalog in force cannot be used here: {exc}")
    raise AssertionError("unreachable")


@click.group(help="Catalog documents: check, show, diff, and verify prices with the vendor.")
def catalog() -> None:
    pass


@catalog.command("check", help="Validate a catalog document offline (exit 1 naming the fault).")
@click.argument("file")
def check(file: str) -> None:
    found = read_document(file)
    label = found.document.get("catalog")
    click.echo(f"ok: {file}: {len(found.models)} models, label {label!r}, digest {found.digest}")


@catalog.command("show", help="Print the catalog document in force.")
def show() -> None:
    found = in_force()
    sys.stdout.write(json.dumps(found.document, indent=2, ensure_ascii=False) + "\n")


@catalog.command(
    "diff",
    help="What NEW changes against OLD (default OLD: the catalog in force): models added, "
    "removed or retired, prices up or down per tier, rules changed.",
)
@click.argument("files", nargs=-1, required=True)
def diff(files: tuple[str, ...]) -> None:
    if len(files) > 2:
        fail("diff takes [OLD] NEW", 2)
    old = read_document(files[0]) if len(files) == 2 else in_force()
    new = read_document(files[-1])
    changes = diff_documents(old.document, new.document)
    click.echo(f"{old.digest[:12]} -> {new.digest[:12]}: {len(changes)} change(s)")
    for change in changes:
        click.echo(change.line())


async def _ask(quotes: QuoteClient, url: str, case: QuoteCase) -> str | None:
    """None when the vendor's quote agrees; else the difference, one line. The answer is
    read as admission reads it (service/upstream/quote.py: bounded, no floats)."""
    where = f"{case.model} {case.tier}"
    answer = await quotes.ask(url, orjson.dumps(case.body), timeout=VERIFY_TIMEOUT_SECONDS)
    if isinstance(answer, NoQuote):
        return f"{where}: no quote ({answer.outcome}: {answer.detail})"
    if isinstance(answer, QuoteRefusal):
        return f"{where}: refused by the quote ({answer.key}: {answer.message})"
    if answer.micros != case.reserve_micros:
        direction = "higher" if answer.micros > case.reserve_micros else "lower"
        return (
            f"{where}: catalog {format_usd(case.reserve_micros)} USD, vendor "
            f"{format_usd(answer.micros)} USD ({direction} at the vendor)"
        )
    return None


async def _verify(url: str, cases: list[QuoteCase], concurrency: int) -> list[str]:
    turns = asyncio.Semaphore(concurrency)
    quotes = build_quote_client()

    async def one(case: QuoteCase) -> str | None:
        async with turns:
            return await _ask(quotes, url, case)

    try:
        found = await asyncio.gather(*(one(c) for c in cases))
    finally:
        await quotes.aclose()
    return [line for line in found if line]


@catalog.command(
    "verify-prices",
    help="Ask the vendor's public quote (POST /waveapi/quote, no key) for every model and "
    "tier of the catalog in force; print each difference (exit 1 on any).",
)
@click.option("--url", help="The quote endpoint (default: QGW_QINGBO_BASE_URL/waveapi/quote).")
@click.option("--file", "file", help="Verify this document instead of the one in force.")
@click.option("--model", "models", multiple=True, help="Only these models (repeatable).")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 32))
def verify_prices(
    url: str | None, file: str | None, models: tuple[str, ...], concurrency: int
) -> None:
    found = read_document(file) if file else in_force()
    url = quote_url(get_settings().qingbo_base_url, url)
    cases = [c for c in quote_cases(found) if not models or c.model in models]
    asked = [c for c in cases if c.body is not None]
    for case in cases:
        if case.body is None:
            click.echo(f"skipped {case.model} {case.tier}: {case.skipped}")
    differences = asyncio.run(_verify(url, asked, concurrency))
    for line in differences:
        click.echo(f"DIFFERENT {line}")
    click.echo(
        f"{len(asked)} price(s) asked at {url} for catalog {found.digest[:12]}: "
        f"{len(differences)} different, {len(cases) - len(asked)} skipped"
    )
    if differences:
        raise SystemExit(1)
