"""Money: integer micro-dollars, and the two forms it crosses the edge in (decimal USD
strings, Qingbo's quota). Never a float in arithmetic."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000

# Qingbo's quota unit (2026-09 `pre_consumed_cost`, `cost`): 500,000 quota = 1 USD, so one
# quota is exactly two micro-dollars.
MICROS_PER_QUOTA = 2


class AmountError(ValueError):
    """A decimal amount that is not a whole number of micro-dollars >= 0."""


def usd_to_micros(text: str, where: str) -> int:
    """'0.3111' -> 311100; `where` names the amount in the error."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError) as exc:
        raise AmountError(f"{where}: {text!r} is not a decimal price") from exc
    micros = value * MICROS_PER_USD
    if value < 0 or micros != micros.to_integral_value():
        raise AmountError(f"{where}: {text!r} must be >= 0 with at most 6 decimals")
    return int(micros)


def format_usd(micros: int) -> str:
    """Micro-dollars as a decimal string with at least two decimals: 311100 -> '0.3111'."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    frac_text = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{frac_text}"


def parse_usd(text: str) -> int:
    return usd_to_micros(text, "amount")


def quota_to_micros(quota: int) -> int:
    return quota * MICROS_PER_QUOTA


def micros_to_quota(micros: int) -> int:
    """Micro-dollars as whole quota, rounded up (an odd micro-dollar is half a quota: only a
    price table with odd micro-dollar prices can give one, and a reservation must not be
    understated)."""
    return -(-micros // MICROS_PER_QUOTA)
