"""The human CLI: `generate`, `tasks list|show|cancel` and `usage` against a gateway.

The gateway URL and key come from `--url`/`--key` or QGW_GATEWAY_URL/QGW_API_KEY. Waiting
follows the task's event stream (no polling) and reconnects with Last-Event-ID. Errors are
one line on stderr (exit status 1); a budget refusal names the budget and when it resets.
"""

from __future__ import annotations

import base64
import functools
import mimetypes
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx
from httpx_sse import connect_sse
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.catalog.statuses import STATUSES, TERMINAL_STATUSES, TaskStatus

# The answer shape this CLI parses (README "Qingbo versions"), whatever the team's default.
CLI_ANSWER_VERSION = "2026-04"
# Written to a file or a pipe, a line stays one line (rich would wrap it at 80 columns).
out = Console(soft_wrap=not sys.stdout.isatty())
err = Console(stderr=True, soft_wrap=not sys.stderr.isatty())


class CliError(Exception):
    pass


def fail(message: str) -> NoReturn:
    raise CliError(message)


def client_command(name: str, help: str) -> Callable[[Callable[..., None]], click.Command]:
    """A command that talks to a gateway: `--url`/`--key` (or QGW_GATEWAY_URL/QGW_API_KEY),
    an httpx client as its first argument, and errors as one line on stderr (status 1)."""

    def wrap(action: Callable[..., None]) -> click.Command:
        @click.option(
            "--url",
            envvar="QGW_GATEWAY_URL",
            default="http://127.0.0.1:8000",
            show_default=True,
            help="Gateway base URL (QGW_GATEWAY_URL).",
        )
        @click.option("--key", envvar="QGW_API_KEY", help="Team API key (QGW_API_KEY).")
        @functools.wraps(action)
        def run(url: str, key: str | None, **options: Any) -> None:
            try:
                if not key:
                    fail("no API key: pass --key or set QGW_API_KEY")
                with httpx.Client(
                    base_url=url.rstrip("/"),
                    headers={
                        "Authorization": f"Bearer {key}",
                        "Qingbo-Version": CLI_ANSWER_VERSION,
                    },
                    timeout=httpx.Timeout(30, read=60),
                ) as http:
                    action(http, **options)
            except CliError as exc:
                err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
                raise SystemExit(1) from None
            except httpx.HTTPError as exc:
                err.print(f"[red]error:[/red] cannot reach {url}: {exc}", soft_wrap=True)
                raise SystemExit(1) from None

        return click.command(name, help=help)(run)

    return wrap


def call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    answer = http.request(method, path, **kwargs)
    if answer.is_success:
        return answer.json()
    try:
        error = answer.json()["error"]
        message = f"{error['message']} ({error['code']}, HTTP {answer.status_code})"
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {answer.status_code}: {answer.text[:200]}"
    fail(message)


def image_value(value: str) -> str:
    if value.startswith(("http://", "https://", "data:")):
        return value
    path = Path(value)
    if not path.is_file():
        fail(f"--image {value}: neither an http(s) URL nor a readable file")
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


@click.option("--prompt", required=True)
@click.option("--model", default="minimax-hailuo-2.3", show_default=True)
@click.option("--resolution")
@click.option("--duration", type=int)
@click.option("--aspect-ratio")
@click.option("--image", multiple=True, metavar="FILE_OR_URL", help="First frame.")
@click.option("--camera", multiple=True, metavar="TAG")
@click.option("--priority", type=int)
@click.option("--wait", is_flag=True, help="Follow the task to its end.")
@click.option("--download", metavar="FILE", help="Save the video here (implies --wait).")
@client_command("generate", help="Submit a video task (and wait).")
def generate(
    http: httpx.Client,
    *,
    prompt: str,
    model: str,
    resolution: str | None,
    duration: int | None,
    aspect_ratio: str | None,
    image: tuple[str, ...],
    camera: tuple[str, ...],
    priority: int | None,
    wait: bool,
    download: str | None,
) -> None:
    body: dict[str, Any] = {"model": model, "prompt": prompt}
    for field, value in (
        ("resolution", resolution),
        ("duration", duration),
        ("aspect_ratio", aspect_ratio),
        ("priority", priority),
    ):
        if value is not None:
            body[field] = value
    if image:
        body["image_urls"] = [image_value(v) for v in image]
    if camera:
        body["camera_movement_tags"] = list(camera)
    # One key per invocation: a retried POST cannot create (and pay for) a second task.
    task = call(
        http, "POST", "/v1/tasks", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    out.print(
        f"task [bold]{task['task_id']}[/bold] {task['status']}: {task['model']} "
        f"{task['resolution']} {task['duration']}s, cost {task['cost_usd']} USD",
        highlight=False,
    )
    if not (wait or download):
        return
    task = follow(http, task)
    if task["status"] != TaskStatus.COMPLETED:
        error = task.get("error") or {}
        fail(f"task {task['status']}: {error.get('message', 'no reason given')}")
    for video in (task.get("result") or {}).get("videos", []):
        out.print(f"video: {video['url']}", highlight=False, soft_wrap=True)
    if download:
        videos = (task.get("result") or {}).get("videos") or []
        if not videos:
            fail("the task completed without a video to download")
        kept = archived_copy(http, task)
        if kept is not None:  # the gateway's own copy: it outlives Qingbo's link
            save(kept, Path(download), client=http)
        else:
            save(videos[0]["url"], Path(download))


def archived_copy(http: httpx.Client, task: dict[str, Any], wait: float = 120) -> str | None:
    """The gateway's content URL of the first video once the archive holds it (waiting
    while it is being copied); None when the gateway does not archive or could not."""
    deadline = time.monotonic() + wait
    while True:
        task = call(http, "GET", f"/v1/tasks/{task['task_id']}")
        archive = task.get("archive") or {"state": "off"}
        if archive["state"] == "stored":
            return str(archive["videos"][0]["url"])
        if archive["state"] != "pending" or time.monotonic() > deadline:  # archive's states
            return None
        time.sleep(1)  # the archive copies within seconds; poll its state


def follow(http: httpx.Client, task: dict[str, Any]) -> dict[str, Any]:
    """Show a live progress bar fed by the task's event stream until it ends."""
    last_id: str | None = None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=out,
    ) as progress:
        bar = progress.add_task(task["status"], total=100)
        for attempt in range(10):
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with connect_sse(
                    http, "GET", f"/v1/tasks/{task['task_id']}/events", headers=headers
                ) as stream:
                    if not stream.response.is_success:
                        stream.response.read()
                        call(http, "GET", f"/v1/tasks/{task['task_id']}")  # names the error
                    for event in stream.iter_sse():
                        if not event.data:  # a keep-alive, not a state of the task
                            continue
                        last_id = event.id or last_id
                        task = event.json()
                        progress.update(bar, description=task["status"], completed=task["progress"])
                        if task["status"] in TERMINAL_STATUSES:
                            return task
            except httpx.TransportError:
                time.sleep(min(2**attempt * 0.2, 5))  # the stream dropped: resume
        fail("lost the event stream; see `qingbo-gateway tasks show`")


def save(url: str, path: Path, *, client: httpx.Client | None = None) -> None:
    """Stream `url` to `path`: Qingbo's link, or (with the gateway's `client`, which sends
    the key) the gateway's content URL, whose signed-URL redirect drops the key."""
    opener = client.stream if client is not None else httpx.stream
    with (
        opener("GET", url, timeout=60, follow_redirects=True) as answer,
        Progress(TextColumn("download"), BarColumn(), DownloadColumn(), console=out) as progress,
    ):
        if not answer.is_success:
            fail(f"download failed: HTTP {answer.status_code}")
        total = int(answer.headers.get("Content-Length", 0)) or None
        bar = progress.add_task("download", total=total)
        with path.open("wb") as file:
            for chunk in answer.iter_bytes():
                file.write(chunk)
                progress.update(bar, advance=len(chunk))
    out.print(f"saved {path} ({path.stat().st_size} bytes)", highlight=False)


@click.group("tasks", help="The team's tasks.")
def tasks() -> None:
    pass


@click.option("--status", type=click.Choice([s.value for s in STATUSES]))
@click.option("--model")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@client_command("list", help="Newest first.")
def list_tasks(http: httpx.Client, *, status: str | None, model: str | None, limit: int) -> None:
    params = {"limit": limit, "status": status, "model": model}
    page = call(http, "GET", "/v1/tasks", params={k: v for k, v in params.items() if v})
    table = Table("task", "status", "progress", "model", "video", "cost USD", "created")
    for task in page["data"]:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(task["created_at"] / 1000))
        table.add_row(
            task["task_id"],
            task["status"],
            f"{task['progress']}%",
            task["model"],
            f"{task['resolution']} {task['duration']}s",
            task["cost_usd"],
            created,
        )
    out.print(table)


@click.argument("task_id")
@client_command("show", help="One task as JSON.")
def show_task(http: httpx.Client, *, task_id: str) -> None:
    out.print_json(data=call(http, "GET", f"/v1/tasks/{task_id}"))


@click.argument("task_id")
@client_command("cancel", help="Cancel a queued task.")
def cancel_task(http: httpx.Client, *, task_id: str) -> None:
    task = call(http, "POST", f"/v1/tasks/{task_id}/cancel")
    out.print(f"task {task['task_id']} {task['status']}", highlight=False)


tasks.add_command(list_tasks)
tasks.add_command(show_task)
tasks.add_command(cancel_task)


@client_command("usage", help="The team's budgets and spend.")
def usage(http: httpx.Client) -> None:
    standing = call(http, "GET", "/v1/usage")
    # The team's money in the current windows, whether or not a budget covers them.
    spend = Table("window", "spent", "reserved", "tasks", "resets at")
    for s in standing["spend"]:
        spend.add_row(
            s["window"], s["spent_usd"], s["reserved_usd"], str(s["tasks"]), s["resets_at"]
        )
    out.print(spend)
    if not standing["budgets"]:
        out.print("no budgets apply to this team")
    table = Table("scope", "window", "limit", "spent", "reserved", "remaining", "resets at")
    for b in standing["budgets"]:
        scope = f"key {b['key_name']}" if b["scope"] == "key" else b["scope"]
        table.add_row(
            scope,
            b["window"],
            b["limit_usd"],
            b["spent_usd"],
            b["reserved_usd"],
            b["remaining_usd"],
            b["resets_at"] or "never",
        )
    if standing["budgets"]:
        out.print(table)
    cap = standing["max_concurrent_tasks"]
    out.print(f"active tasks: {standing['active_tasks']}" + (f" of {cap}" if cap else ""))


CLIENT_COMMANDS = (generate, tasks, usage)
