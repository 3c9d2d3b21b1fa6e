"""Every answer from Qingbo is cleaned here before anything reads it (issue 31, point 3):
what a bug at Qingbo, a proxy or a compromised link can put in a JSON answer must not stop
the gateway from recording it. Postgres refuses NUL in text and in jsonb strings, and
UTF-8 refuses lone surrogates, so one such character made every read of a task raise;
sizes and counts are capped so no answer makes a large row or a long loop.

The work is linear in the answer's size (one walk, one character-class pass per string)
and bounded: strings are cut before they are cleaned, containers before they are walked.
"""

from __future__ import annotations

import math
import re
from typing import Any

# C0 controls but TAB and LF, DEL, C1 controls, and lone surrogates (no valid UTF-8).
_UNWANTED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# Longer than any URL Qingbo signs, or any message worth reading.
MAX_STRING_CHARS = 4096
MAX_MESSAGE_CHARS = 1024
MAX_LIST_ITEMS = 16
MAX_OBJECT_MEMBERS = 64
MAX_DEPTH = 6
# Plain JSON integers beyond these are not a count, a time or an amount Qingbo could mean.
MAX_JSON_INT = 2**63 - 1


def clean_text(value: str, *, limit: int = MAX_STRING_CHARS) -> str:
    """`value` cut to `limit` characters, without control characters or lone surrogates."""
    return _UNWANTED.sub("", value[:limit])


def clean_answer(value: Any, *, depth: int = 0) -> Any:
    """A copy of a decoded JSON value that Postgres can store and the gateway can read in
    bounded time: strings cleaned and cut, lists and objects cut to their first members,
    nesting past MAX_DEPTH dropped (None), non-finite floats and absurd integers None."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -MAX_JSON_INT <= value <= MAX_JSON_INT else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        return None
    if isinstance(value, list):
        return [clean_answer(item, depth=depth + 1) for item in value[:MAX_LIST_ITEMS]]
    if isinstance(value, dict):
        cleaned: dict[str, Any] = {}
        for name, item in value.items():
            if len(cleaned) >= MAX_OBJECT_MEMBERS:
                break
            cleaned[clean_text(str(name), limit=128)] = clean_answer(item, depth=depth + 1)
        return cleaned
    return None
