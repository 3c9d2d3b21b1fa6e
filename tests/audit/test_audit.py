"""The audit trail: every admin change with who, when, from where, before and after, no
secret in it, filters and pages; Postgres refuses to change or remove an entry."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import asyncpg
import httpx
import pytest

from tests.factories import ADMIN

ALICE = {**ADMIN, "X-Actor": "alice@finance"}


async def audit(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    answer = await client.get("/admin/audit", params=params, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_every_admin_change_is_recorded_without_secrets(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    created = await client.post("/admin/teams", json={"name": "audited-video"}, headers=ALICE)
    team = created.json()
    team_id = team["id"]
    secret = team["webhook_secret"]
    await client.patch(
        f"/admin/teams/{team_id}", json={"api_version": "2026-09", "rpm_limit": 30}, headers=ALICE
    )
    issued = (
        await client.post(
            f"/admin/teams/{team_id}/keys",
            json={"name": "ci", "expires_in_days": 30},
            headers=ADMIN,
        )
    ).json()
    with caplog.at_level(logging.INFO, logger="service.audit.service"):
        for limit in ("10.00", "25.00"):
            put = await client.put(
                f"/admin/teams/{team_id}/budgets",
                json={"budgets": [{"window": "month", "limit_usd": limit}]},
                headers=ALICE,
            )
            assert put.status_code == 200
    rotated = (
        await client.post(f"/admin/teams/{team_id}/webhook-secret/rotate", headers=ADMIN)
    ).json()
    await client.delete(f"/admin/keys/{issued['id']}", headers=ADMIN)

    entries = (await audit(client, target=team_id))["data"]
    assert [e["action"] for e in entries] == [
        "webhook_secret.rotate",
        "budgets.set",
        "budgets.set",
        "team.update",
        "team.create",
    ]
    raise_, first = entries[1], entries[2]
    assert first["before"]["budgets"] == {} and first["after"]["budgets"] == {"month": "10.00"}
    assert raise_["before"]["budgets"] == {"month": "10.00"}
    assert raise_["after"]["budgets"] == {"month": "25.00"}
    assert raise_["actor"] == "alice@finance" and raise_["source"] == "127.0.0.1"
    assert raise_["request_id"] == put.headers["x-request-id"]
    update = entries[3]
    assert update["before"] == {"api_version": "2026-04", "rpm_limit": None}
    assert update["after"] == {"api_version": "2026-09", "rpm_limit": 30}
    assert entries[4]["after"]["webhook_secret"] == secret[:10] + "…"
    assert entries[0]["after"]["webhook_secret"] == rotated["webhook_secret"][:10] + "…"
    keys = (await audit(client, target=issued["id"]))["data"]
    assert [e["action"] for e in keys] == ["key.revoke", "key.issue"]
    assert keys[1]["after"]["prefix"] == issued["prefix"] and keys[1]["actor"] == "admin"

    everything = str((await audit(client, limit=500))["data"])
    for leaked in (secret, rotated["webhook_secret"], issued["key"]):
        assert leaked not in everything
    changes = [r for r in caplog.records if r.getMessage() == "admin change"]
    assert [r.action for r in changes] == ["budgets.set", "budgets.set"]  # type: ignore[attr-defined]
    assert changes[-1].after["budgets"] == {"month": "25.00"}  # type: ignore[attr-defined]


async def test_company_and_key_budgets_filters_and_pages(client: httpx.AsyncClient) -> None:
    await client.put(
        "/admin/budgets",
        json={"budgets": [{"window": "day", "limit_usd": "100.00"}]},
        headers=ADMIN,
    )
    company = (await audit(client, target="company", action="budgets.set"))["data"][0]
    assert company["target_type"] == "company" and company["after"]["budgets"] == {"day": "100.00"}
    await client.put("/admin/budgets", json={"budgets": []}, headers=ADMIN)
    page = await audit(client, action="budgets.set", limit=1)
    assert len(page["data"]) == 1 and page["next_cursor"]
    following = await audit(client, action="budgets.set", limit=1, cursor=page["next_cursor"])
    assert following["data"][0]["id"] < page["data"][0]["id"]
    since = await audit(client, since=page["data"][0]["at"])
    assert all(e["at"] >= page["data"][0]["at"] for e in since["data"])
    for bad in ({"action": "team.delete"}, {"cursor": "abc"}):
        refused = await client.get("/admin/audit", params=bad, headers=ADMIN)
        assert refused.status_code == 400


async def test_postgres_refuses_to_change_the_trail(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await client.post("/admin/teams", json={"name": "audited-immutable"}, headers=ADMIN)
    for sql in (
        "UPDATE admin_audit SET actor = 'mallory'",
        "DELETE FROM admin_audit",
        "TRUNCATE admin_audit",
    ):
        with pytest.raises(asyncpg.PostgresError) as refused:
            await db.execute(sql)
        assert refused.value.sqlstate == "QB403" and "append-only" in str(refused.value)
    assert await db.fetchval("SELECT count(*) FROM admin_audit WHERE actor = 'mallory'") == 0


# Credentials an app or operator may put in a URL (issue 31, point 7).
SECRETS_IN_URLS = ("s3cret-pass", "tok-123", "key-456", "sig-789", "pw-000")


def url_with_credentials(path: str) -> str:
    return (
        f"http://alice:s3cret-pass@127.0.0.1:9/{path}?team=video&access_token=tok-123"
        "&api_key=key-456&X-Amz-Signature=sig-789&password=pw-000"
    )


async def test_credentials_in_an_alert_url_are_redacted_in_the_trail_and_its_log_line(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The trail and the log line show the URL without its userinfo and secret-named
    parameters; the team keeps the URL as given, for delivery."""
    given, changed = url_with_credentials("alerts"), url_with_credentials("alerts/v2")
    with caplog.at_level(logging.INFO, logger="service.audit.service"):
        created = await client.post(
            "/admin/teams", json={"name": "audited-url", "alert_url": given}, headers=ADMIN
        )
        assert created.status_code == 201, created.text
        team_id = created.json()["id"]
        patched = await client.patch(
            f"/admin/teams/{team_id}", json={"alert_url": changed}, headers=ADMIN
        )
        assert patched.status_code == 200, patched.text
    stored = (await client.get(f"/admin/teams/{team_id}", headers=ADMIN)).json()
    assert stored["alert_url"] == changed  # delivery uses it as given

    entries = (await audit(client, target=team_id))["data"]
    shown = (
        "http://***@127.0.0.1:9/alerts?team=video&access_token=***&api_key=***"
        "&X-Amz-Signature=***&password=***"
    )
    assert entries[1]["after"]["alert_url"] == shown
    assert entries[0]["before"]["alert_url"] == shown
    assert entries[0]["after"]["alert_url"] == shown.replace("/alerts?", "/alerts/v2?")
    logged = [r for r in caplog.records if r.getMessage() == "admin change"]
    assert len(logged) == 2
    for text in (str(entries), *(str(vars(r)) for r in logged)):
        for secret in SECRETS_IN_URLS:
            assert secret not in text


@pytest.mark.parametrize("log_format", ["json", "pretty"])
def test_every_log_line_of_a_process_loses_url_credentials(tmp_path: Any, log_format: str) -> None:
    """Whoever logs a URL (an error naming a callback_url, a Postgres DETAIL quoting a row,
    a traceback): the process's log line shows it without its credentials."""
    script = f"""
import logging
from service.platform.logs import configure_logging
configure_logging("INFO", log_format={log_format!r})
log = logging.getLogger("probe")
url = {url_with_credentials("hook")!r}
log.warning("delivery to %s failed", url, extra={{"callback_url": url, "urls": [url]}})
try:
    raise RuntimeError(f"cannot reach {{url}}")
except RuntimeError:
    log.exception("unhandled error")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "delivery to http://***@127.0.0.1:9/hook?team=video" in done.stderr, done.stderr
    assert "RuntimeError: cannot reach http://***@127.0.0.1:9/hook" in done.stderr, done.stderr
    for secret in SECRETS_IN_URLS:
        assert secret not in done.stderr, done.stderr
