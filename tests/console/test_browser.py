"""The console in Debian's Chromium against a real stack: a team signs in, submits through
the API, watches the progress rise and the video play, downloads the spend CSV (the
report's, to the micro-dollar), is refused another team's task, signs out; an admin issues
a key (copied once) and revokes it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx

from tests.console.conftest import AXE, LAPTOP, PHONE, Stack, screenshot, sign_in_page
from tests.factories import ADMIN, make_team, submit, wait_for

TERMINAL = ("completed", "failed", "cancelled")


async def test_a_team_watches_its_task_to_its_video_and_its_spend(
    browser: Any, console_stack: Stack, stack_client: httpx.AsyncClient, sim: httpx.AsyncClient
) -> None:
    await sim.put(
        "/_sim/config",
        json={"queue_seconds": 1, "processing_seconds": 6, "playable_videos": True},
    )
    base = console_stack.url
    team = await make_team(stack_client)
    await stack_client.put(
        f"/admin/teams/{team.team['id']}/budgets",
        json={"budgets": [{"window": "month", "limit_usd": "2.00"}]},
        headers=ADMIN,
    )
    other = await make_team(stack_client)
    theirs = await submit(stack_client, other, metadata={"project": "theirs"})
    context = await browser.new_context(viewport=LAPTOP, accept_downloads=True)
    page = await context.new_page()
    await sign_in_page(page, base, team.key)
    task = await submit(stack_client, team, metadata={"project": "atlas"}, duration=6)
    await page.goto(f"{base}/console/tasks/{task['task_id']}")

    seen: list[tuple[str, int]] = []

    async def ended() -> bool:  # what a person sees, as the page's own polling changes it
        status = await page.locator("#task-status").text_content()
        progress = int(await page.locator("#task-progress").get_attribute("value") or 0)
        if not seen or seen[-1] != (status, progress):
            seen.append((status or "", progress))
        return status in TERMINAL

    await wait_for(ended, timeout=60, interval=0.1)
    assert await page.get_by_role("button", name="Cancel the task").count() == 0
    assert seen[-1] == ("completed", 100), seen
    assert any(0 < p < 100 for _, p in seen), seen  # it rose while processing
    progresses = [p for _, p in seen]
    assert progresses == sorted(progresses)

    video = page.locator("#task-video")
    await video.wait_for(timeout=30_000)  # once the archive holds it
    await page.wait_for_function(
        "() => { const v = document.getElementById('task-video');"
        " return v && v.readyState >= 2 && v.duration > 1; }",
        timeout=20_000,
    )
    played = await page.evaluate(
        "async () => { const v = document.getElementById('task-video'); v.muted = true;"
        " await v.play(); await new Promise(r => setTimeout(r, 700));"
        " return {time: v.currentTime, width: v.videoWidth, error: v.error}; }"
    )
    assert played["time"] > 0 and played["width"] == 64 and played["error"] is None
    # The bytes come through the console's route, behind the session, with Range.
    part = await page.request.get(
        f"{base}/console/tasks/{task['task_id']}/video", headers={"Range": "bytes=4-11"}
    )
    assert part.status == 206 and await part.body() == b"ftypisom"
    assert part.headers["content-range"].startswith("bytes 4-11/")
    await screenshot(page, "task")

    await page.goto(f"{base}/console/tasks")
    assert await page.get_by_role("link", name=task["task_id"]).count() == 1
    assert await page.get_by_role("link", name=theirs["task_id"]).count() == 0
    await screenshot(page, "tasks")

    await page.goto(f"{base}/console/money")
    text = await page.locator("main").text_content() or ""
    from_, to = re.search(r"admitted from (\S+) to (\S+) \(exclusive\)", text).groups()  # type: ignore[union-attr]
    async with page.expect_download() as download_info:
        await page.locator("#csv-day").click()
    download = await download_info.value
    shown = (await asyncio.to_thread(Path(await download.path()).read_bytes)).decode()
    report = await stack_client.get(
        "/v1/usage/report",
        params={"group_by": "day", "from": from_, "to": to, "format": "csv"},
        headers=team.headers,
    )
    assert shown == report.text
    charged = (await stack_client.get(f"/v1/tasks/{task['task_id']}", headers=team.headers)).json()
    assert f",1,1,{charged['cost_usd']}" in shown  # the day's one completed task, its charge
    await screenshot(page, "money")

    refused = await page.goto(f"{base}/console/tasks/{theirs['task_id']}")
    assert refused is not None and refused.status == 404
    assert await page.get_by_role("heading", name="Not found").count() == 1

    await page.goto(f"{base}/console/webhooks")
    await screenshot(page, "webhooks")

    await page.set_viewport_size(PHONE)
    await page.goto(f"{base}/console/tasks/{task['task_id']}")
    await screenshot(page, "task-phone")

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{base}/console/sign-in")
    await page.goto(f"{base}/console/tasks")
    assert page.url.startswith(f"{base}/console/sign-in")
    await screenshot(page, "sign-in")
    await context.close()


async def test_an_admin_issues_a_key_shown_once_and_revokes_it(
    browser: Any, console_stack: Stack, stack_client: httpx.AsyncClient
) -> None:
    base = console_stack.url
    team = await make_team(stack_client)
    await submit(stack_client, team)
    context = await browser.new_context(viewport=LAPTOP)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page = await context.new_page()
    await sign_in_page(page, base, ADMIN["Authorization"].removeprefix("Bearer "), "Ada Admin")
    await page.goto(f"{base}/console/operations")
    await screenshot(page, "operations")
    await page.goto(f"{base}/console/keys?team={team.team['id']}")
    await screenshot(page, "keys")
    await page.get_by_label("Name").fill("ci-bot")
    await page.get_by_role("button", name="Issue key").click()
    key = (await page.locator("#issued-key").text_content() or "").strip()
    assert key.startswith("qgw_")
    await page.get_by_role("button", name="Copy").click()
    await page.get_by_text("Copied.").wait_for()
    assert await page.evaluate("() => navigator.clipboard.readText()") == key
    works = await stack_client.get("/v1/tasks", headers={"Authorization": f"Bearer {key}"})
    assert works.status_code == 200

    await page.goto(f"{base}/console/keys?team={team.team['id']}")  # shown once: not again
    assert key not in (await page.content())
    async with page.expect_navigation():
        await page.get_by_role("button", name=re.compile(r"^Revoke key ci-bot")).click()
    row = page.get_by_role("row").filter(has_text="ci-bot")
    assert "revoked" in (await row.text_content() or "")
    gone = await stack_client.get("/v1/tasks", headers={"Authorization": f"Bearer {key}"})
    assert gone.status_code == 401
    keys = await stack_client.get(f"/admin/teams/{team.team['id']}/keys", headers=ADMIN)
    bot = next(k for k in keys.json()["data"] if k["name"] == "ci-bot")
    trail = await stack_client.get("/admin/audit", params={"target": bot["id"]}, headers=ADMIN)
    assert {(e["action"], e["actor"]) for e in trail.json()["data"]} == {
        ("key.issue", "Ada Admin (console)"),
        ("key.revoke", "Ada Admin (console)"),
    }
    await context.close()


async def axe_violations(page: Any) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length,"
        " target: v.nodes[0] && v.nodes[0].target}))"
    )
    return list(result)


async def test_every_main_page_passes_axe_on_a_laptop_and_a_phone(
    browser: Any, console_stack: Stack, stack_client: httpx.AsyncClient
) -> None:
    """axe-core (tests/console/axe, vendored): no serious or critical violation anywhere."""
    base = console_stack.url
    team = await make_team(stack_client)
    task = await submit(stack_client, team, metadata={"project": "atlas"})
    team_pages = [
        "/console/tasks",
        f"/console/tasks/{task['task_id']}",
        "/console/money",
        "/console/keys",
        "/console/webhooks",
        "/console/tasks/task-not-there",
    ]
    admin_pages = [
        "/console/operations",
        f"/console/money?team={team.team['id']}",
        f"/console/keys?team={team.team['id']}",
        f"/console/webhooks?team={team.team['id']}",
    ]
    found: dict[str, list[dict[str, Any]]] = {}
    for viewport_name, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
        for who, secret, name, paths in (
            ("team", team.key, "", team_pages),
            ("admin", ADMIN["Authorization"].removeprefix("Bearer "), "Ada Admin", admin_pages),
        ):
            # axe is injected as an inline script, which the pages' CSP refuses otherwise.
            context = await browser.new_context(viewport=viewport, bypass_csp=True)
            page = await context.new_page()
            await page.goto(f"{base}/console/sign-in")
            found[f"{viewport_name} sign-in"] = await axe_violations(page)
            await sign_in_page(page, base, secret, name)
            for path in paths:
                await page.goto(f"{base}{path}")
                found[f"{viewport_name} {who} {path}"] = await axe_violations(page)
            await context.close()
    print(
        "axe violations by page:",
        {k: [(v["id"], v["impact"]) for v in vs] for k, vs in found.items()},
    )
    serious = {
        where: [v for v in violations if v["impact"] in ("serious", "critical")]
        for where, violations in found.items()
    }
    assert not {k: v for k, v in serious.items() if v}, serious


async def test_the_console_works_from_the_keyboard(
    browser: Any, console_stack: Stack, stack_client: httpx.AsyncClient
) -> None:
    base = console_stack.url
    team = await make_team(stack_client)
    context = await browser.new_context(viewport=LAPTOP)
    page = await context.new_page()
    await page.goto(f"{base}/console/sign-in")

    async def focused() -> dict[str, str]:
        return dict(
            await page.evaluate(
                "() => ({text: document.activeElement.textContent.trim(),"
                " id: document.activeElement.id,"
                " outline: getComputedStyle(document.activeElement).outlineStyle})"
            )
        )

    await page.keyboard.press("Tab")
    assert (await focused())["text"] == "Skip to content"
    await page.keyboard.press("Tab")
    now = await focused()
    assert now["id"] == "secret" and now["outline"] == "solid"  # focus is visible
    await page.keyboard.type(team.key)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{base}/console/tasks")
    for expected in ("Skip to content", "Tasks", "Money"):
        await page.keyboard.press("Tab")
        assert (await focused())["text"] == expected
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{base}/console/money")
    await context.close()
