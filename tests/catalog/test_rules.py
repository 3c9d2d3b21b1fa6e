"""Every catalog rule, good and bad values, through the real API, against each upstream
generation: errors name the field and rule in Qingbo's envelope, and a rejected request
stores nothing. Cases marked with a generation hold for that one only."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.catalog.hailuo_terms import CAMERA_TAGS
from service.catalog.price_table import PriceTableError, load_price_table, parse_price_table
from service.platform.money import format_usd, parse_usd
from tests.factories import TeamKey, make_team, task_body

PNG = base64.b64encode(
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
).decode()
JPG = base64.b64encode(
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
).decode()
WEBP = base64.b64encode(
    b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00\x30\x01\x00\x9d\x01\x2a"
).decode()
GIF = base64.b64encode(b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!").decode()


@pytest.fixture
async def team(client: httpx.AsyncClient) -> TeamKey:
    return await make_team(client)


GOOD: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "defaults",
        {},
        {
            "action": "generate",
            "resolution": "768p",
            "duration": 6,
            "aspect_ratio": "16:9",
            "cost_usd": {"2026-04": "0.3111", "2026-09": "0.3294"},
        },
    ),
    (
        "fast model",
        {"model": "minimax-hailuo-2.3-fast", "image_urls": ["https://e.com/a.png"]},
        {"cost_usd": {"2026-04": "0.1581", "2026-09": "0.171"}},
    ),
    (
        "10 s at 768p",
        {"duration": 10},
        {"duration": 10, "cost_usd": {"2026-04": "0.5185", "2026-09": "0.504"}},
    ),
    (
        "1080p at 6 s",
        {"resolution": "1080p", "duration": 6},
        {"cost_usd": {"2026-04": "0.459", "2026-09": "0.441"}},
    ),
    ("1080P upper case", {"resolution": "1080P"}, {"resolution": "1080p"}),
    ("768P upper case", {"resolution": "768P"}, {"resolution": "768p"}),
    (
        "fast 1080p",
        {
            "model": "minimax-hailuo-2.3-fast",
            "resolution": "1080p",
            "first_frame_image": "https://e.com/a.png",
        },
        {
            "cost_usd": {"2026-04": "0.2703", "2026-09": "0.297"},
            "first_frame_image": "https://e.com/a.png",
        },
    ),
    ("16:9 is kept", {"aspect_ratio": "16:9"}, {"aspect_ratio": "16:9"}),
    ("2000-char prompt", {"prompt": "a" * 2000}, {}),
    (
        "image URL routes to image2video",
        {"image_urls": ["https://example.com/cat.jpg"]},
        {"action": "image2video"},
    ),
    (
        "explicit image2video",
        {"action": "image2video", "image_urls": ["http://img.example/x"]},
        {"action": "image2video"},
    ),
    ("base64 PNG", {"image_urls": [PNG]}, {"action": "image2video"}),
    ("base64 JPG", {"image_urls": [JPG]}, {"action": "image2video"}),
    ("base64 WEBP", {"image_urls": [WEBP]}, {"action": "image2video"}),
    ("data URI PNG", {"image_urls": [f"data:image/png;base64,{PNG}"]}, {"action": "image2video"}),
    (
        "camera tags in prompt",
        {"prompt": "[推进] old town, [变焦推近] rain"},
        {"prompt_camera_tags": ["[推进]", "[变焦推近]"]},
    ),
    (
        "non-tag brackets are prose",
        {"prompt": "[Scene 1] a quiet harbour"},
        {"prompt_camera_tags": []},
    ),
    (
        "camera tag list, three spellings",
        {"camera_movement_tags": ["[左摇]", "跟随", "zoom-out"]},
        {"camera_movement_tags": ["[左摇]", "[跟随]", "[变焦拉远]"]},
    ),
    (
        "booleans",
        {"watermark": True, "prompt_optimizer": False, "fast_pretreatment": True},
        {"watermark": True, "prompt_optimizer": False, "fast_pretreatment": True},
    ),
    (
        "callback",
        {
            "callback_url": "https://app.internal/hook",
            "callback_events": ["processing", "completed"],
        },
        {"callback_events": ["processing", "completed"]},
    ),
    ("no events", {"callback_events": []}, {"callback_events": []}),
]
# Only where the upstream can honour them.
GOOD_APRIL: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "text-only fast model",
        {"model": "minimax-hailuo-2.3-fast", "image_urls": None},
        {"cost_usd": "0.1581"},
    ),
    ("9:16", {"aspect_ratio": "9:16"}, {"aspect_ratio": "9:16"}),
    ("1:1", {"aspect_ratio": "1:1"}, {"aspect_ratio": "1:1"}),
    ("four reference images", {"image_urls": ["https://e.com/a"] * 4}, {"action": "image2video"}),
]
GOOD_CURRENT: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "first frame as image_urls",
        {"image_urls": ["https://e.com/a.png"]},
        {"action": "image2video", "image_urls": ["https://e.com/a.png"]},
    ),
]
GOOD_CASES = (
    [(*g, v) for g in GOOD for v in ("2026-04", "2026-09")]
    + [(*g, "2026-04") for g in GOOD_APRIL]
    + [(*g, "2026-09") for g in GOOD_CURRENT]
)


@pytest.mark.parametrize(
    ("name", "fields", "expected", "version"),
    GOOD_CASES,
    ids=[f"{g[3]}-{g[0]}" for g in GOOD_CASES],
)
async def test_valid_requests_are_admitted(
    client_for: Any,
    team: TeamKey,
    name: str,
    fields: dict[str, Any],
    expected: dict[str, Any],
    version: str,
) -> None:
    async with client_for(version) as client:
        answer = await client.post("/v1/tasks", json=task_body(**fields), headers=team.headers)
    assert answer.status_code == 200, answer.text
    task = answer.json()
    assert task["status"] == "queued" and task["task_id"].startswith("task-")
    for field, value in expected.items():
        # Prices differ by generation: 2026-04 per second, 2026-09 per clip (since 09-24).
        assert task[field] == (value[version] if isinstance(value, dict) else value), field


BAD: list[tuple[str, Any, str, str]] = [
    ("missing model", {"prompt": "x"}, "model", "field required"),
    ("unknown model", task_body(model="sora-9"), "model", "unknown model"),
    ("missing prompt", {"model": "minimax-hailuo-2.3"}, "prompt", "field required"),
    ("empty prompt", task_body(prompt=""), "prompt", "at least 1 character"),
    ("blank prompt", task_body(prompt="   "), "prompt", "must not be blank"),
    ("2001-char prompt", task_body(prompt="a" * 2001), "prompt", "at most 2000 characters"),
    ("prompt not a string", task_body(prompt=5), "prompt", "valid string"),
    (
        "mistyped camera tag in prompt",
        task_body(prompt="[推近] a street"),
        "prompt",
        "unknown camera tag [推近]",
    ),
    ("bad action", task_body(action="upscale"), "action", "'generate' or 'image2video'"),
    (
        "image2video without image",
        task_body(action="image2video"),
        "image_urls",
        "image2video needs an image",
    ),
    ("bad aspect ratio", task_body(aspect_ratio="4:3"), "aspect_ratio", "'16:9', '9:16' or '1:1'"),
    ("bad resolution", task_body(resolution="720p"), "resolution", "'768p' or '1080p'"),
    (
        "512p on 2.3",
        task_body(resolution="512p"),
        "resolution",
        "minimax-hailuo-2.3 supports 768p, 1080p",
    ),
    ("duration 5", task_body(duration=5), "duration", "must be 6 or 10 seconds"),
    ("duration as string", task_body(duration="6"), "duration", "valid integer"),
    ("duration as bool", task_body(duration=True), "duration", "valid integer"),
    (
        "10 s at 1080p",
        task_body(duration=10, resolution="1080p"),
        "duration",
        "1080p allows only 6 seconds",
    ),
    (
        "image not URL or base64",
        task_body(image_urls=["not an image!"]),
        "image_urls[0]",
        "http(s) URL or Base64",
    ),
    (
        "ftp image",
        task_body(image_urls=["ftp://host/x.png"]),
        "image_urls[0]",
        "http(s) URL or Base64",
    ),
    ("GIF image", task_body(image_urls=[GIF]), "image_urls[0]", "content is image/gif"),
    (
        "data URI lies",
        task_body(image_urls=[f"data:image/jpeg;base64,{PNG}"]),
        "image_urls[0]",
        "content is image/png",
    ),
    ("empty image list", task_body(image_urls=[]), "image_urls", "at least 1 item"),
    ("five images", task_body(image_urls=["https://e.com/a"] * 5), "image_urls", "at most 4 items"),
    (
        "unknown camera tag",
        task_body(camera_movement_tags=["barrel-roll"]),
        "camera_movement_tags[0]",
        "unknown camera tag",
    ),
    ("watermark not bool", task_body(watermark="yes"), "watermark", "valid boolean"),
    (
        "prompt_optimizer not bool",
        task_body(prompt_optimizer=1),
        "prompt_optimizer",
        "valid boolean",
    ),
    (
        "fast_pretreatment not bool",
        task_body(fast_pretreatment="false"),
        "fast_pretreatment",
        "valid boolean",
    ),
    (
        "callback not http",
        task_body(callback_url="file:///etc/passwd"),
        "callback_url",
        "absolute http(s) URL",
    ),
    ("relative callback", task_body(callback_url="/hook"), "callback_url", "absolute http(s) URL"),
    (
        "unknown event",
        task_body(callback_events=["done"]),
        "callback_events[0]",
        "'queued', 'processing'",
    ),
    ("unknown field", task_body(negative_prompt="rain"), "negative_prompt", "unknown field"),
    (
        "both image forms",
        task_body(image_urls=["https://e.com/a"], first_frame_image="https://e.com/b"),
        "image_urls",
        "not both",
    ),
    (
        "last frame alone",
        task_body(last_frame_image="https://e.com/b"),
        "last_frame_image",
        "needs a first_frame_image",
    ),
    ("seed not an integer", task_body(seed="7"), "seed", "valid integer"),
    ("body not an object", ["model"], "body", "valid dictionary"),
    ("NUL in prompt", task_body(prompt="a\x00b"), "prompt", "must not contain NUL"),
    (
        "lone surrogate in prompt",
        b'{"model": "minimax-hailuo-2.3", "prompt": "a\\udbbdb"}',
        "prompt",
        "valid string",
    ),
]


FRAME = "https://e.com/first.png"
# What one generation cannot honour (the other translates or takes it).
BAD_APRIL: list[tuple[str, Any, str, str]] = [
    ("seed", task_body(seed=42), "seed", "takes no seed on the configured Qingbo API (2026-04)"),
    (
        "last frame",
        task_body(first_frame_image=FRAME, last_frame_image=FRAME),
        "last_frame_image",
        "(2026-04) has no last frame",
    ),
    ("02", task_body(model="minimax-hailuo-02"), "model", "not offered by the configured"),
]
BAD_CURRENT: list[tuple[str, Any, str, str]] = [
    # Refused by all three Hailuo models since 2026-09-24 (400, not billed upstream).
    ("seed on 2.3", task_body(seed=42), "seed", "takes no seed on the configured Qingbo API"),
    (
        "seed on 2.3-fast",
        task_body(model="minimax-hailuo-2.3-fast", first_frame_image=FRAME, seed=7),
        "seed",
        "takes no seed",
    ),
    ("9:16", task_body(aspect_ratio="9:16"), "aspect_ratio", "(2026-09) cannot honour 9:16"),
    (
        "fast without a first frame",
        task_body(model="minimax-hailuo-2.3-fast", image_urls=None),
        "first_frame_image",
        "required by minimax-hailuo-2.3-fast",
    ),
    (
        "two images on 2.3",
        task_body(image_urls=[FRAME, FRAME]),
        "image_urls[1]",
        "only minimax-hailuo-02 takes a last frame",
    ),
    (
        "last frame on 2.3",
        task_body(first_frame_image=FRAME, last_frame_image=FRAME),
        "last_frame_image",
        "at most 1 image",
    ),
    (
        "three images on 02",
        task_body(model="minimax-hailuo-02", image_urls=[FRAME] * 3),
        "image_urls",
        "at most 2 images",
    ),
    (
        "camera tag list on 02",
        task_body(model="minimax-hailuo-02", camera_movement_tags=["[推进]"]),
        "camera_movement_tags",
        "takes no camera-movement tags",
    ),
    (
        "camera tag in the prompt on 02",
        task_body(model="minimax-hailuo-02", prompt="[推进] a street"),
        "prompt",
        "takes no camera-movement tags",
    ),
    (
        "512p on 02 without a first frame",
        task_body(model="minimax-hailuo-02", resolution="512p"),
        "resolution",
        "needs a first frame",
    ),
    (
        "1080p at 10 s on 02",
        task_body(model="minimax-hailuo-02", resolution="1080p", duration=10),
        "duration",
        "1080p allows only 5 seconds",
    ),
    ("seed on 02", task_body(model="minimax-hailuo-02", seed=1), "seed", "takes no seed"),
    (
        "tags push the prompt past 2000",
        task_body(prompt="a" * 1995, camera_movement_tags=["[推进]", "[拉远]"]),
        "prompt",
        "once camera_movement_tags are written into it",
    ),
]
BAD_CASES = (
    [(*b, v) for b in BAD for v in ("2026-04", "2026-09")]
    + [(*b, "2026-04") for b in BAD_APRIL]
    + [(*b, "2026-09") for b in BAD_CURRENT]
)


@pytest.mark.parametrize(
    ("name", "body", "param", "rule", "version"),
    BAD_CASES,
    ids=[f"{b[4]}-{b[0]}" for b in BAD_CASES],
)
async def test_invalid_requests_name_field_and_rule_and_store_nothing(
    client_for: Any,
    db: asyncpg.Connection,
    team: TeamKey,
    name: str,
    body: Any,
    param: str,
    rule: str,
    version: str,
) -> None:
    async with client_for(version) as client:
        if isinstance(body, bytes):  # JSON that httpx would refuse to encode itself
            headers = {**team.headers, "Content-Type": "application/json"}
            answer = await client.post("/v1/tasks", content=body, headers=headers)
        else:
            answer = await client.post("/v1/tasks", json=body, headers=team.headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["param"] == param
    assert error["message"].startswith(f"{param}: ")
    assert rule in error["message"]
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0


async def test_malformed_json_is_invalid_request(client: httpx.AsyncClient, team: TeamKey) -> None:
    answer = await client.post(
        "/v1/tasks",
        content=b"{not json",
        headers={**team.headers, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "message": "body: the request body is not valid JSON",
        "code": "invalid_request",
        "param": "body",
    }


async def test_oversized_body_is_413(client: httpx.AsyncClient, team: TeamKey, res: Any) -> None:
    huge = "A" * (res.settings.max_request_bytes + 1)
    answer = await client.post("/v1/tasks", json=task_body(image_urls=[huge]), headers=team.headers)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


def test_all_fifteen_camera_tags_are_accepted_in_both_forms() -> None:
    from service.catalog.rules import canonical_camera_tag, prompt_camera_tags

    assert len(CAMERA_TAGS) == 15
    prompt = " ".join(t.tag for t in CAMERA_TAGS)
    assert prompt_camera_tags(prompt) == [t.tag for t in CAMERA_TAGS]
    for tag in CAMERA_TAGS:
        assert canonical_camera_tag(tag.tag, param="p") == tag.tag
        assert canonical_camera_tag(tag.tag.strip("[]"), param="p") == tag.tag
        assert canonical_camera_tag(tag.gloss, param="p") == tag.tag


def test_prices_are_exact_micro_dollars() -> None:
    table = load_price_table()
    assert table.price_micros("minimax-hailuo-2.3", "768p", 6) == 311_100
    assert table.price_micros("minimax-hailuo-2.3", "1080p", 6) == 459_000
    assert table.price_micros("minimax-hailuo-2.3-fast", "768p", 10) == 263_500
    assert format_usd(311_100) == "0.3111" and format_usd(459_000) == "0.459"
    assert format_usd(25_000_000) == "25.00" and parse_usd("25.00") == 25_000_000


def test_price_table_file_replaces_the_shipped_one(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "models": {
                    "minimax-hailuo-2.3": {"768p": "0.1", "1080p": "0.2"},
                    "minimax-hailuo-2.3-fast": {"768p": "0.01", "1080p": "0.02"},
                }
            }
        )
    )
    table = load_price_table(path)
    assert table.price_micros("minimax-hailuo-2.3", "1080p", 6) == 1_200_000


@pytest.mark.parametrize(
    "models",
    [
        {"minimax-hailuo-2.3": {"768p": "0.1"}},
        {
            "minimax-hailuo-2.3": {"768p": "0.1", "1080p": "0.0000001"},
            "minimax-hailuo-2.3-fast": {"768p": "1", "1080p": "1"},
        },
        {
            "minimax-hailuo-2.3": {"768p": "-1", "1080p": "1"},
            "minimax-hailuo-2.3-fast": {"768p": "1", "1080p": "1"},
        },
        {
            "minimax-hailuo-2.3": {"768p": "abc", "1080p": "1"},
            "minimax-hailuo-2.3-fast": {"768p": "1", "1080p": "1"},
        },
        {"sora-9": {"768p": "1"}},
    ],
    ids=["missing price", "sub-micro precision", "negative", "not a number", "unknown model"],
)
def test_bad_price_tables_are_refused(models: dict[str, Any]) -> None:
    with pytest.raises(PriceTableError):
        parse_price_table({"models": models})


async def test_models_catalog(client_for: Any, team: TeamKey) -> None:
    for version, live in (
        ("2026-04", {"minimax-hailuo-2.3", "minimax-hailuo-2.3-fast"}),
        ("2026-09", {"minimax-hailuo-02", "minimax-hailuo-2.3", "minimax-hailuo-2.3-fast"}),
    ):
        async with client_for(version) as client:
            answer = await client.get("/v1/models", headers=team.headers)
            assert (await client.get("/v1/models")).status_code == 401
        assert answer.status_code == 200
        body = answer.json()
        assert body["upstream_api_version"] == version
        models = {m["id"]: m for m in body["data"]}
        assert live <= set(models)
        assert set(body["generations"]) == {"2026-04", "2026-09"}
        hailuo = models["minimax-hailuo-2.3"]
        assert hailuo["durations_by_resolution"] == {"768p": [6, 10], "1080p": [6]}
        assert hailuo["priced"] is True
        if version == "2026-04":  # the April page: per second
            assert hailuo["pricing"]["per_second_usd"] == {"768p": "0.05185", "1080p": "0.0765"}
            assert hailuo["pricing"]["per_task_usd"]["1080p_6s"] == "0.459"
        else:  # per clip since 2026-09-24, from the catalog in force
            assert hailuo["pricing"]["kind"] == "per_clip"
            assert hailuo["pricing"]["tiers"]["1080p"] == {"6": "0.441"}
        assert len(body["camera_movement_tags"]) == 15
        assert len(body["catalog"]["digest"]) == 64
    current = {m["id"]: m for m in body["generations"]["2026-09"]}
    assert current["minimax-hailuo-02"]["priced"] is True
    assert current["minimax-hailuo-02"]["pricing"]["tiers"]["512p"] == {"5": "0.09", "10": "0.135"}
    assert current["minimax-h3"]["pricing"]["rates"] == {"768p": "0.072", "2k": "0.117"}
    assert "minimax-h3" not in {m["id"] for m in body["generations"]["2026-04"]}
    assert current["minimax-hailuo-02"]["durations_by_resolution"]["1080p"] == [5]
    assert current["minimax-hailuo-2.3-fast"]["first_frame_required"] is True
    assert "aspect_ratio" not in current["minimax-hailuo-2.3"]["accepted_fields"]
    april = {m["id"]: m for m in body["generations"]["2026-04"]}
    assert "camera_movement_tags" in april["minimax-hailuo-2.3"]["accepted_fields"]


async def test_02_is_priced_per_clip_under_2026_09(
    client_for: Any, db: asyncpg.Connection, team: TeamKey
) -> None:
    """It was unpriced (price_not_configured) until the catalog priced it per clip."""
    async with client_for("2026-09") as client:
        body = task_body(model="minimax-hailuo-02", resolution="512p", first_frame_image=FRAME)
        estimate = await client.post("/v1/tasks/estimate", json=body, headers=team.headers)
        answer = await client.post("/v1/tasks", json=body, headers=team.headers)
    assert estimate.status_code == 200, estimate.text
    assert estimate.json()["cost_usd"] == "0.09"
    assert answer.status_code == 200 and answer.json()["estimated_cost_usd"] == "0.09"
    digest = await db.fetchval("SELECT catalog_digest FROM tasks")
    assert digest == estimate.json()["catalog_digest"] and len(digest) == 64


def test_a_price_table_can_price_02(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {"models": {"minimax-hailuo-02": {"512p": "0.01", "768p": "0.02", "1080p": "0.05"}}}
        )
    )
    table = load_price_table(path)
    assert table.is_priced("minimax-hailuo-02") and not table.is_priced("minimax-hailuo-2.3")
    assert table.price_micros("minimax-hailuo-02", "1080p", 5) == 250_000
