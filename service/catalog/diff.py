"""What a new catalog document changes against an old one, for an operator to read before
putting it in force (`qingbo-gateway catalog diff`) and for the audit trail of a
replacement: models added, removed or retired, every price up or down by tier, and which
other rules of a model changed. Prices compare as integer micro-dollars."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.catalog.document import price_micros

# Members of a model entry compared as "rules" (pricing is compared tier by tier).
RULE_MEMBERS = ("family", "actions", "chain", "defaults", "body", "media", "duration")


@dataclass(frozen=True)
class Change:
    kind: str  # added, removed, retired, retiring, price_up, price_down, price_added, ...
    model: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.kind:<14} {self.model}{': ' + self.detail if self.detail else ''}"


def price_tiers(pricing: dict[str, Any]) -> dict[str, str]:
    """Every price of a model's pricing by a tier name an operator reads: `768p 10 s`,
    `per second 720p`, `flat`, `audio: per second 1080p`, `input video 720p`,
    `per image beyond 5`. Values are the document's decimal strings."""
    tiers: dict[str, str] = {}

    def base(holder: dict[str, Any], prefix: str) -> None:
        for res, text in (holder.get("rates") or {}).items():
            tiers[f"{prefix}per second {res}"] = text
        for res, by_duration in (holder.get("tiers") or {}).items():
            for seconds, text in by_duration.items():
                tiers[f"{prefix}{res} {seconds} s"] = text
        if "price" in holder:
            tiers[f"{prefix}flat"] = holder["price"]

    base(pricing, "")
    for i, variant in enumerate(pricing.get("variants") or []):
        base(variant, f"{variant.get('name', f'variant {i}')}: ")
    video = pricing.get("input_video") or {}
    if "rate" in video:
        tiers["input video per second"] = video["rate"]
    for res, text in (video.get("rates") or {}).items():
        tiers[f"input video per second {res}"] = text
    image = pricing.get("per_image")
    if image:
        tiers[f"per image beyond {image.get('free')}"] = image.get("fee")
    return tiers


def _usd(micros: int) -> str:
    whole, part = divmod(micros, 1_000_000)
    return f"{whole}.{part:06d}".rstrip("0").rstrip(".") if part else str(whole)


def _price_changes(model_id: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    before, after = price_tiers(old), price_tiers(new)
    changes = []
    for tier in sorted(set(before) | set(after)):
        if tier not in after:
            changes.append(Change("price_removed", model_id, f"{tier} (was {before[tier]} USD)"))
            continue
        if tier not in before:
            changes.append(Change("price_added", model_id, f"{tier} {after[tier]} USD"))
            continue
        was = price_micros(before[tier], f"models.{model_id}.pricing {tier}")
        now = price_micros(after[tier], f"models.{model_id}.pricing {tier}")
        if was == now:
            continue
        kind = "price_up" if now > was else "price_down"
        ratio = f" ({(now - was) * 100 / was:+.2f}%)" if was else ""
        changes.append(Change(kind, model_id, f"{tier}: {_usd(was)} -> {_usd(now)} USD{ratio}"))
    if old.get("kind") != new.get("kind"):
        changes.append(Change("pricing_kind", model_id, f"{old.get('kind')} -> {new.get('kind')}"))
    return changes


def diff_documents(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every change from `old` to `new` (both checked documents), models in name order."""
    old_models, new_models = old.get("models") or {}, new.get("models") or {}
    old_retired, new_retired = old.get("retired") or {}, new.get("retired") or {}
    changes: list[Change] = []
    for model_id in sorted(set(old_models) | set(new_models) | set(new_retired)):
        before, after = old_models.get(model_id), new_models.get(model_id)
        if after is None:
            if model_id in new_retired and model_id not in old_retired:
                changes.append(Change("retired", model_id, f"on {new_retired[model_id]['on']}"))
            elif before is not None and model_id not in new_retired:
                changes.append(Change("removed", model_id, f"family {before.get('family')}"))
            continue
        if before is None:
            note = " (was retired)" if model_id in old_retired else ""
            changes.append(Change("added", model_id, f"family {after.get('family')}{note}"))
            continue
        if after.get("retired_on") != before.get("retired_on"):
            when = after.get("retired_on")
            changes.append(
                Change("retiring", model_id, f"on {when}" if when else "retirement date cleared")
            )
        changes.extend(_price_changes(model_id, before["pricing"], after["pricing"]))
        ruled = [m for m in RULE_MEMBERS if before.get(m) != after.get(m)]
        if ruled:
            changes.append(Change("rules", model_id, ", ".join(ruled) + " changed"))
    return changes


def summary(changes: list[Change]) -> dict[str, int]:
    """How many changes of each kind (the audit trail keeps this, not every line)."""
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.kind] = counts.get(change.kind, 0) + 1
    return counts
