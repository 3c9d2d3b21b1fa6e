"""The human CLI: `generate`, `tasks list|show|cancel` and `usage` against a gateway.

The gateway URL and key come from `--url`/`--key` or QGW_GATEWAY_URL/QGW_API_KEY. Waiting
follows the task's event stream (no polling) and reconnects with Last-Event-ID. Errors are
one line on stderr (exit status 1); a budget refusal names the budget and when it resets.
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

import httpx
from httpx_sse import connect_sse
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

TERMINAL = ("completed", "failed", "cancelled")
# The answer shape this CLI parses (README "Qingbo versions"), whatever the team's default.
CLI_ANSWER_VERSION = "2026-04"
out = Console()
err = Console(stderr=True)


class CliError(Exception):
    pass


def fail(message: str) -> NoReturn:
    raise CliError(message)


def add_client_commands(sub: Any) -> None:
    """Register generate, tasks and usage on the main parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("QGW_GATEWAY_URL", "http://127.0.0.1:8000"),
        help="gateway base URL (QGW_GATEWAY_URL)",
    )
    common.add_argument(
        "--key", default=os.environ.get("QGW_API_KEY"), help="team API key (QGW_API_KEY)"
    )

    gen = sub.add_parser("generate", parents=[common], help="submit a video task (and wait)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--model", default="minimax-hailuo-2.3")
    gen.add_argument("--resolution")
    gen.add_argument("--duration", type=int)
    gen.add_argument("--aspect-ratio")
    gen.add_argument(
        "--image", action="append", default=[], metavar="FILE_OR_URL", help="first frame"
    )
    gen.add_argument("--camera", action="append", default=[], metavar="TAG")
    gen.add_argument("--priority", type=int)
    gen.add_argument("--wait", action="store_true", help="follow the task to its end")
    gen.add_argument("--download", metavar="FILE", help="save the video here (implies --wait)")
    gen.set_defaults(func=main_exit, action=cmd_generate, client=True)

    tasks = sub.add_parser("tasks", help="the team's tasks")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
    listing = tasks_sub.add_parser("list", parents=[common], help="newest first")
    listing.add_argument("--status", choices=("queued", "processing", *TERMINAL))
    listing.add_argument("--model")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(func=main_exit, action=cmd_tasks_list, client=True)
    show = tasks_sub.add_parser("show", parents=[common], help="one task as JSON")
    show.add_argument("task_id")
    show.set_defaults(func=main_exit, action=cmd_tasks_show, client=True)
    cancel = tasks_sub.add_parser("cancel", parents=[common], help="cancel a queued task")
    cancel.add_argument("task_id")
    cancel.set_defaults(func=main_exit, action=cmd_tasks_cancel, client=True)

    usage = sub.add_parser("usage", parents=[common], help="the team's budgets and spend")
    usage.set_defaults(func=main_exit, action=cmd_usage, client=True)


def run(args: argparse.Namespace) -> int:
    """Run one client command; errors become one line on stderr and exit status 1."""
    try:
        if not args.key:
            fail("no API key: pass --key or set QGW_API_KEY")
        with httpx.Client(
            base_url=args.url.rstrip("/"),
            headers={"Authorization": f"Bearer {args.key}", "Qingbo-Version": CLI_ANSWER_VERSION},
            timeout=httpx.Timeout(30, read=60),
        ) as http:
            args.action(http, args)
        return 0
    except CliError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 1
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/red] cannot reach {args.url}: {exc}", soft_wrap=True)
        return 1


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


def cmd_generate(http: httpx.Client, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"model": args.model, "prompt": args.prompt}
    for field, value in (
        ("resolution", args.resolution),
        ("duration", args.duration),
        ("aspect_ratio", args.aspect_ratio),
        ("priority", args.priority),
    ):
        if value is not None:
            body[field] = value
    if args.image:
        body["image_urls"] = [image_value(v) for v in args.image]
    if args.camera:
        body["camera_movement_tags"] = args.camera
    # One key per invocation: a retried POST cannot create (and pay for) a second task.
    task = call(
        http, "POST", "/v1/tasks", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    out.print(
        f"task [bold]{task['task_id']}[/bold] {task['status']}: {task['model']} "
        f"{task['resolution']} {task['duration']}s, cost {task['cost_usd']} USD",
        highlight=False,
    )
    if not (args.wait or args.download):
        return
    task = follow(http, task)
    if task["status"] != "completed":
        error = task.get("error") or {}
        fail(f"task {task['status']}: {error.get('message', 'no reason given')}")
    for video in (task.get("result") or {}).get("videos", []):
        out.print(f"video: {video['url']}", highlight=False, soft_wrap=True)
    if args.download:
        videos = (task.get("result") or {}).get("videos") or []
        if not videos:
            fail("the task completed without a video to download")
        kept = archived_copy(http, task)
        if kept is not None:  # the gateway's own copy: it outlives Qingbo's link
            download(kept, Path(args.download), client=http)
        else:
            download(videos[0]["url"], Path(args.download))


def archived_copy(http: httpx.Client, task: dict[str, Any], wait: float = 120) -> str | None:
    """The gateway's content URL of the first video once the archive holds it (waiting
    while it is being copied); None when the gateway does not archive or could not."""
    deadline = time.monotonic() + wait
    while True:
        task = call(http, "GET", f"/v1/tasks/{task['task_id']}")
        archive = task.get("archive") or {"state": "off"}
        if archive["state"] == "stored":
            return str(archive["videos"][0]["url"])
        if archive["state"] != "pending" or time.monotonic() > deadline:
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
                        last_id = event.id or last_id
                        task = event.json()
                        progress.update(bar, description=task["status"], completed=task["progress"])
                        if task["status"] in TERMINAL:
                            return task
            except httpx.TransportError:
                time.sleep(min(2**attempt * 0.2, 5))  # the stream dropped: resume
        fail("lost the event stream; see `qingbo-gateway tasks show`")


def download(url: str, path: Path, *, client: httpx.Client | None = None) -> None:
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


def cmd_tasks_list(http: httpx.Client, args: argparse.Namespace) -> None:
    params = {"limit": args.limit, "status": args.status, "model": args.model}
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


def cmd_tasks_show(http: httpx.Client, args: argparse.Namespace) -> None:
    out.print_json(data=call(http, "GET", f"/v1/tasks/{args.task_id}"))


def cmd_tasks_cancel(http: httpx.Client, args: argparse.Namespace) -> None:
    task = call(http, "POST", f"/v1/tasks/{args.task_id}/cancel")
    out.print(f"task {task['task_id']} {task['status']}", highlight=False)


def cmd_usage(http: httpx.Client, args: argparse.Namespace) -> None:
    usage = call(http, "GET", "/v1/usage")
    if not usage["budgets"]:
        out.print("no budgets apply to this team")
    table = Table("scope", "window", "limit", "spent", "reserved", "remaining", "resets at")
    for b in usage["budgets"]:
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
    if usage["budgets"]:
        out.print(table)
    cap = usage["max_concurrent_tasks"]
    out.print(f"active tasks: {usage['active_tasks']}" + (f" of {cap}" if cap else ""))


def main_exit(args: argparse.Namespace) -> None:
    sys.exit(run(args))
