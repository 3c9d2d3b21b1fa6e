"""Pricing as the vendor prices, compiled from a model's `pricing` data: integer micro-dollars
only (prices are parsed from their decimal strings once, at load; never a float).

The amount computed here is the reservation: the most the task can cost. Where the price
depends on what the gateway cannot know before the result (input video length, a model
that picks its own length, `duration: 0`), the largest amount the rules allow is assumed;
the task settles on Qingbo's `cost` as every task does (tasks/settlement.py).
`reserve_bound` also says whether the amount is exact, and whether a bound rests on a
length the vendor reads from the task's input media: only then can the vendor's quote know
better before the result (tasks/quoting.py).

Order of application (catalog-format.md): the first matching variant replaces the base
prices; then input-video seconds at a rate; then a fee per image beyond a free count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jsonschema_rs

from service.catalog.document import CatalogError, price_micros
from service.platform.errors import PriceNotConfigured


@dataclass(frozen=True)
class Tariff:
    """One set of base prices: per second by resolution, per clip by resolution and
    duration, or one flat price."""

    per_second: dict[str, int] | None = None
    per_clip: dict[str, dict[int, int]] | None = None
    flat: int | None = None


def _tariff(kind: str, holder: dict[str, Any], where: str) -> Tariff:
    if kind == "per_second":
        rates = {r: price_micros(t, f"{where}.rates.{r}") for r, t in holder["rates"].items()}
        return Tariff(per_second=rates)
    if kind == "per_clip":
        tiers = {
            res: {int(s): price_micros(t, f"{where}.tiers.{res}.{s}") for s, t in by.items()}
            for res, by in holder["tiers"].items()
        }
        return Tariff(per_clip=tiers)
    return Tariff(flat=price_micros(holder["price"], f"{where}.price"))


@dataclass(frozen=True)
class Variant:
    name: str
    when: jsonschema_rs.Draft202012Validator
    tariff: Tariff


@dataclass(frozen=True)
class InputVideo:
    rate: int | None
    rates: dict[str, int] | None
    when: jsonschema_rs.Draft202012Validator | None


@dataclass(frozen=True)
class PerImage:
    free: int
    fee: int
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Pricing:
    """A model's compiled pricing, with what the reservation needs to know of the model."""

    kind: str
    base: Tariff
    variants: tuple[Variant, ...]
    input_video: InputVideo | None
    per_image: PerImage | None
    billed_on_reference_video: bool
    defaults: dict[str, Any]
    auto_duration: int | str | None  # the value that lets the model pick its own length
    max_seconds: int
    video_fields: tuple[str, ...]
    max_video_seconds: int

    def reserve(self, body: dict[str, Any]) -> int:
        """The most a task with `body` (the vendor fields, defaults not yet filled) can cost,
        in micro-dollars."""
        return self.reserve_bound(body).micros

    def reserve_bound(self, body: dict[str, Any]) -> Reservation:
        """`reserve`, saying whether the amount is exact or a bound, and whether that bound
        rests on a length the vendor measures in the input media."""
        asked = {k: v for k, v in self.defaults.items() if v is not None} | body
        has_video = any(asked.get(f) for f in self.video_fields)
        seconds, length_known = self._seconds(asked, has_video)
        tariff = self.base
        for variant in self.variants:
            if variant.when.is_valid(asked):
                tariff = variant.tariff
                break
        resolution = asked.get("resolution")
        amount = _base_amount(tariff, resolution, seconds, exact="duration" in asked)
        input_seconds_assumed = False
        video = self.input_video
        if video is not None and has_video and (video.when is None or video.when.is_valid(asked)):
            rate = (video.rates and _by_resolution(video.rates, resolution)) or video.rate or 0
            amount += rate * self.max_video_seconds
            input_seconds_assumed = True  # the file's length, read by the vendor
        if self.per_image is not None:
            count = sum(_count(asked.get(f)) for f in self.per_image.fields)
            amount += self.per_image.fee * max(0, count - self.per_image.free)
        exact = length_known and not input_seconds_assumed
        # A length assumed with a video in the body may be the video's own (billed on the
        # reference, `duration: 0` = the source's length): the vendor reads it from the file.
        return Reservation(amount, exact, on_media=not exact and has_video)

    def depends_on_media(self, body: dict[str, Any]) -> bool:
        """Whether the reservation is a bound resting on input media the vendor measures."""
        if not any(body.get(f) or self.defaults.get(f) for f in self.video_fields):
            return False  # no video: the common case answers without pricing twice
        return self.reserve_bound(body).on_media

    def _seconds(self, asked: dict[str, Any], has_video: bool) -> tuple[int, bool]:
        """The seconds billed, and whether they are known now (else the most assumed)."""
        if self.billed_on_reference_video and has_video:
            return self.max_video_seconds, False  # billed on the reference's length: its most
        duration = asked.get("duration")
        if (
            not isinstance(duration, int)
            or isinstance(duration, bool)
            or self.auto_duration == "model"
            or duration == self.auto_duration
        ):
            return self.max_seconds, False  # the model picks its length: the longest it makes
        return duration, True


class Reservation(NamedTuple):
    """A task's reservation in micro-dollars. `exact`: the task costs this; otherwise it is
    the most the rules allow, and `on_media` says the unknown is a length the vendor reads
    from the task's input media (a reference video's seconds, or an output as long as it)."""

    micros: int
    exact: bool
    on_media: bool


def _count(value: Any) -> int:
    if isinstance(value, list):
        return len(value)
    return 1 if value else 0


def _by_resolution(rates: dict[str, int], resolution: Any) -> int:
    if resolution in rates:
        return rates[resolution]
    if resolution is None and len(rates) == 1:
        return next(iter(rates.values()))
    raise PriceNotConfigured(
        f"resolution: no price configured for {resolution!r}", param="resolution"
    )


def _base_amount(tariff: Tariff, resolution: Any, seconds: int, *, exact: bool) -> int:
    if tariff.flat is not None:
        return tariff.flat
    if tariff.per_second is not None:
        return _by_resolution(tariff.per_second, resolution) * seconds
    assert tariff.per_clip is not None
    if resolution is None and len(tariff.per_clip) == 1:
        resolution = next(iter(tariff.per_clip))
    tiers = tariff.per_clip.get(resolution)
    if tiers is None:
        raise PriceNotConfigured(
            f"resolution: no price configured for {resolution!r}", param="resolution"
        )
    if seconds in tiers:
        return tiers[seconds]
    if not exact:  # a model-chosen length: the dearest tier at that resolution
        return max(tiers.values())
    raise PriceNotConfigured(
        f"duration: no price configured for {seconds} s at {resolution}", param="duration"
    )


def compile_pricing(model: dict[str, Any], where: str) -> Pricing:
    raw = model["pricing"]
    kind = raw["kind"]
    variants = tuple(
        Variant(
            name=str(v.get("name", i)),
            when=jsonschema_rs.Draft202012Validator(v["when"]),
            tariff=_tariff(kind, v, f"{where}.variants[{i}]"),
        )
        for i, v in enumerate(raw.get("variants") or [])
    )
    video = raw.get("input_video")
    input_video = None
    if video is not None:
        input_video = InputVideo(
            rate=price_micros(video["rate"], f"{where}.input_video.rate")
            if "rate" in video
            else None,
            rates={
                r: price_micros(t, f"{where}.input_video.rates.{r}")
                for r, t in video["rates"].items()
            }
            if "rates" in video
            else None,
            when=jsonschema_rs.Draft202012Validator(video["when"]) if "when" in video else None,
        )
    image = raw.get("per_image")
    per_image = None
    if image is not None:
        per_image = PerImage(
            free=int(image["free"]),
            fee=price_micros(image["fee"], f"{where}.per_image.fee"),
            fields=tuple(image["fields"]),
        )
    media = model.get("media") or {}
    duration = model.get("duration") or {}
    if raw.get("billed_seconds") and not media.get("max_video_seconds"):
        raise CatalogError(f"{where}.billed_seconds: needs media.max_video_seconds")
    return Pricing(
        kind=kind,
        base=_tariff(kind, raw, where),
        variants=variants,
        input_video=input_video,
        per_image=per_image,
        billed_on_reference_video=raw.get("billed_seconds") == "reference_video",
        defaults=dict(model.get("defaults") or {}),
        auto_duration=duration.get("auto"),
        max_seconds=int(duration.get("max") or 0),
        video_fields=tuple(media.get("videos") or ()),
        max_video_seconds=int(media.get("max_video_seconds") or 0),
    )
