"""Every answer from Qingbo is cleaned before it is read (issue 31, point 3): what Postgres
cannot store is gone, sizes and counts are capped, numbers bounded, parsing linear."""

from __future__ import annotations

import math

from service.upstream.parse import MAX_COST_QUOTA, parse_progress, parse_upstream_task
from service.upstream.sanitize import (
    MAX_LIST_ITEMS,
    MAX_MESSAGE_CHARS,
    MAX_STRING_CHARS,
    clean_answer,
)


def test_strings_lose_nul_controls_and_lone_surrogates_and_are_cut() -> None:
    cleaned = clean_answer(
        {"a\x00": "x\x00y\x07z\tw\n\x7f\x85", "s": "ok\ud800", "long": "u" * 10 * MAX_STRING_CHARS}
    )
    assert cleaned == {"a": "xyz\tw\n", "s": "ok", "long": "u" * MAX_STRING_CHARS}


def test_containers_are_capped_in_count_and_depth_and_numbers_bounded() -> None:
    deep: object = "bottom"
    for _ in range(20):
        deep = [deep]
    cleaned = clean_answer(
        {
            "many": list(range(1000)),
            "members": {f"k{i}": i for i in range(1000)},
            "deep": deep,
            "nan": math.nan,
            "inf": -math.inf,
            "huge": 10**30,
        }
    )
    assert cleaned["many"] == list(range(MAX_LIST_ITEMS))
    assert len(cleaned["members"]) == 64
    assert cleaned["nan"] is None and cleaned["inf"] is None and cleaned["huge"] is None
    depth, node = 0, cleaned["deep"]
    while isinstance(node, list):
        depth, node = depth + 1, node[0]
    assert node is None and depth < 10  # cut off, not 20 levels down


def test_a_terminal_answer_is_clean_and_bounded() -> None:
    view = parse_upstream_task(
        {
            "status": "failed",
            "progress": "1" + " " * 100_000 + "x",
            "cost": 5e18,
            "error": {"message": "m\x00" * 5000, "code": "c\x00", "extra": {"x": 1}},
            "result": {
                "images": ["\x00", "https://i/\x00a", 3, None],
                "videos": [{"url": [f"https://v/{i}\x00" for i in range(100)]}],
            },
        }
    )
    assert view.progress == 0 and view.oddities == ("bad_progress", "absurd_cost")
    assert view.cost_quota == MAX_COST_QUOTA  # held: 5e18 quota overflowed bigint micros
    assert view.error == {"message": "m" * MAX_MESSAGE_CHARS, "code": "c"}
    assert view.result is not None
    assert view.result["images"] == ["https://i/a"]
    assert view.result["videos"][0]["url"] == [f"https://v/{i}" for i in range(MAX_LIST_ITEMS)]
    assert parse_upstream_task({"status": "failed", "error": "plain\x00"}).error == {
        "message": "plain",
        "code": "upstream_error",
    }


def test_progress_is_read_in_every_spelling_and_nothing_else() -> None:
    for text, expected in (("45%", 45), (" 45.5 % ", 45), ("100", 100), ("", 0), ("250%", 100)):
        assert parse_progress(text) == expected, text
    for text in ("45%%", "4 5", "x", "1" + " " * 40 + "%", "-3%", "1e3"):
        assert parse_progress(text) == 0, text
