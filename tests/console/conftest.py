"""A real stack for the console's browser tests (an API process and a worker archiving into a
directory, the simulator serving playable clips) and Debian's Chromium driven by Playwright.

Screenshots of the main pages are written to $QGW_CONSOLE_SCREENSHOTS (e.g. docs/console)
when it is set, and nowhere otherwise.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cli.dev import free_port, wait_until_healthy
from service.config import Settings
from tests.conftest import Process, settings_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in a container
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = Path(__file__).parent / "axe" / "axe.min.js"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@dataclass
class Stack:
    url: str
    settings: Settings


@pytest.fixture(scope="module")
def console_stack(
    settings: Settings, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """An API process with the archive on and a fixed console secret, and a worker that
    archives into the same directory; a task someone looks at is read every half second."""
    port = free_port()
    own = settings.model_copy(
        update={
            "archive_url": f"file://{tmp_path_factory.mktemp('console-archive')}",
            "archive_retry_base_seconds": 0.1,
            "archive_retry_max_seconds": 0.5,
            "public_base_url": f"http://127.0.0.1:{port}",
            "console_secret": "console-test-secret-padded-to-32-chars",
            "poll_watched_seconds": 0.5,
            "worker_http_port": 0,
        }
    )
    env = settings_env(own)
    api = Process(["api", "--port", str(port)], env, logs_dir / "console-api.log").start()
    worker = Process(["worker"], env, logs_dir / "console-worker.log").start()
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(f"{url}/healthz")
    yield Stack(url, own)
    worker.stop()
    api.stop()


@pytest.fixture
async def stack_client(console_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=console_stack.url, timeout=20) as http:
        yield http


@pytest.fixture(scope="module")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium; .ci/run installs it)")
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


async def screenshot(page: Any, name: str) -> None:
    """Into $QGW_CONSOLE_SCREENSHOTS/<name>.png when set (the README's pictures)."""
    folder = os.environ.get("QGW_CONSOLE_SCREENSHOTS")
    if folder:  # Playwright makes the folder
        await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


async def sign_in_page(page: Any, base: str, secret: str, name: str = "") -> None:
    await page.goto(f"{base}/console/sign-in")
    await page.get_by_label("Team API key or admin token").fill(secret)
    if name:
        await page.get_by_label("Your name").fill(name)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/console/tasks")
