"""Shared field types for request models, and the parsing of numbers in headers and queries."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _storable(value: str) -> str:
    # Postgres text and jsonb cannot hold NUL, and lone surrogates (legal in JSON escapes)
    # cannot be encoded as UTF-8: refuse both at the edge with a 400, not a 500 later.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (unpaired surrogate)") from None
    return value


# Put it after any length constraints: `Annotated[str, Field(max_length=9), Storable]`.
Storable = AfterValidator(_storable)
SafeText = Annotated[str, Storable]


def whole_number(text: str | None, *, max_digits: int = 18) -> int | None:
    """A whole number written in ASCII digits, as headers and query strings carry them;
    None for anything else. str.isdigit() alone also passes "²" (which int() refuses) and
    "٣" (which int() reads as 3), and int() of thousands of digits raises."""
    if text and len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None
