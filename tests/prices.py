"""The prices the suite's upstream generation charges for the bodies tests send most.

Under `2026-04` Hailuo is priced per second (the April page); under `2026-09` per clip
(since 2026-09-24, service/catalog/families/hailuo.json). Tests that price a task read the
figure for the generation the suite runs against (QGW_TEST_QINGBO_API_VERSION)."""

from __future__ import annotations

import os

VERSION = os.environ.get("QGW_TEST_QINGBO_API_VERSION", "2026-09")
PRICES_USD = {
    # minimax-hailuo-2.3 at 768p 6 s: task_body()'s defaults
    "2026-04": {
        "default": "0.3111",
        "768p_10s": "0.5185",
        "1080p_6s": "0.459",
        "fast_768p_6s": "0.1581",
    },
    "2026-09": {
        "default": "0.3294",
        "768p_10s": "0.504",
        "1080p_6s": "0.441",
        "fast_768p_6s": "0.171",
    },
}
QUOTA = {  # the same in Qingbo's quota (500,000 a dollar)
    "2026-04": {"default": 155_550, "fast_768p_6s": 79_050},
    "2026-09": {"default": 164_700, "fast_768p_6s": 85_500},
}


def usd(name: str = "default", version: str | None = None) -> str:
    return PRICES_USD[version or VERSION][name]


def quota(name: str = "default", version: str | None = None) -> int:
    return QUOTA[version or VERSION][name]
