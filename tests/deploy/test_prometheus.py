"""The Prometheus config and alert rules, checked and unit-tested by promtool (Debian package
`prometheus`; .ci/run installs it, so in CI these never skip)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cli.dev import free_port, wait_until_healthy
from tests.factories import wait_until

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy/prometheus"


# The worker refuses a metrics token under 32 characters (issue 31, point 9).
SCRAPE_TOKEN = "scrape-token-of-at-least-32-characters"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI: .ci/run installs the Debian package")
        pytest.skip(f"{name} not installed (apt-get install prometheus)")
    return found


def shipped_config(tmp: Path, token: str, targets: dict[str, str] | None = None) -> Path:
    """deploy/prometheus as compose mounts it, with the scrape token's secret file in a
    temporary directory (and, for a real scrape, the targets pointed at this machine)."""
    tmp.mkdir(parents=True, exist_ok=True)
    secret = tmp / "metrics_token"
    secret.write_text(token)
    text = (PROMETHEUS / "prometheus.yml").read_text("utf-8")
    assert text.count("credentials_file: /run/secrets/metrics_token") == 2
    text = text.replace("/run/secrets/metrics_token", str(secret))
    for shipped, local in (targets or {}).items():
        text = text.replace(f'"{shipped}"', f'"{local}"')
    if targets:  # the first scrape comes at once instead of within 15 s
        text = text.replace("scrape_interval: 15s", "scrape_interval: 1s")
    for name in ("alerts.yml", "alerts.test.yml"):
        shutil.copy(PROMETHEUS / name, tmp / name)
    (tmp / "prometheus.yml").write_text(text)
    return tmp


def promtool(
    *args: str, stdin: str | None = None, cwd: Path = PROMETHEUS
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_and_rules_are_valid(tmp_path: Path) -> None:
    checked = promtool("check", "config", "prometheus.yml", cwd=shipped_config(tmp_path, "t"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0 and "SUCCESS: 15 rules found" in rules.stdout, rules.stdout


def test_alert_rules_fire_when_they_should() -> None:
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_shipped_scrape_config_reads_a_token_protected_metrics_endpoint(
    tmp_path: Path, start_worker: Any
) -> None:
    """A real Prometheus with the shipped config scrapes a worker whose /metrics requires
    QGW_METRICS_TOKEN: up with the token, 401 (down) with another."""
    port = free_port()
    start_worker(worker_http_port=port, metrics_token=SCRAPE_TOKEN)
    wait_until_healthy(f"http://127.0.0.1:{port}/healthz")
    assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 401

    def scrape_health(token: str) -> list[dict[str, Any]]:
        config = shipped_config(
            tmp_path / token, token, {"worker:9100": f"127.0.0.1:{port}", "api:8000": "127.0.0.1:1"}
        )
        web = free_port()
        with subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config / 'prometheus.yml'}",
                f"--storage.tsdb.path={config / 'data'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as prometheus:
            try:
                found: list[dict[str, Any]] = []

                def scraped() -> bool:
                    nonlocal found
                    try:
                        answer = httpx.get(f"http://127.0.0.1:{web}/api/v1/targets")
                    except httpx.HTTPError:
                        return False
                    if answer.status_code != 200:  # still starting ("Service Unavailable")
                        return False
                    found = [
                        t
                        for t in answer.json()["data"]["activeTargets"]
                        if t["labels"]["job"] == "qingbo-gateway-worker"
                    ]
                    return bool(found) and found[0]["health"] != "unknown"

                wait_until(scraped, timeout=60)
                return found
            finally:
                prometheus.terminate()

    (good,) = scrape_health(SCRAPE_TOKEN)
    assert good["health"] == "up", good
    (bad,) = scrape_health("wrong-token-" + SCRAPE_TOKEN)
    assert bad["health"] == "down" and "401" in bad["lastError"], bad
