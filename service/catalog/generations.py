"""The two generations of Qingbo's API as data: which Hailuo models each offers, their rules,
the request form each accepts, and how each shapes its answers (`wire`, wire.py). Code asks
these tables; it never branches on a version.

- `2026-04`: the Hailuo page of April 2026 (qingbo-api.md, sections up to "Other series").
- `2026-09`: the vendor's current pages (QingBo-AI/WaveAPI-Doc `en/api-reference/video/hailuo.mdx`,
  `task/submit.mdx`, `task/status.mdx`, `task/cancel.mdx`, `docs/task-system.mdx`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

from service.catalog.wire import APRIL_2026_WIRE, SEPTEMBER_2026_WIRE, Wire
from service.platform.errors import InvalidRequest

ApiVersion = Literal["2026-04", "2026-09"]
API_VERSIONS: tuple[ApiVersion, ...] = ("2026-04", "2026-09")
LATEST: ApiVersion = "2026-09"
# The answer shape a team gets unless it or a call asks for another: the one the apps were
# first written against.
DEFAULT_ANSWER_VERSION: ApiVersion = "2026-04"


@dataclass(frozen=True)
class ModelSpec:
    """One model's rules in one generation."""

    id: str
    family: str
    description: str
    resolutions: tuple[str, ...]
    durations: tuple[int, ...]
    # Durations allowed at a resolution, where narrower than `durations`.
    durations_by_resolution: dict[str, tuple[int, ...]] = field(default_factory=dict)
    default_resolution: str = "768p"
    default_duration: int = 6
    max_prompt_chars: int = 2000
    # How many images the model takes (reference images, or first + last frame).
    max_images: int = 4
    first_frame_required: bool = False
    # Resolutions offered only with a first frame (02's 512p).
    first_frame_only: tuple[str, ...] = ()
    last_frame: bool = False
    seed: bool = False
    # Where camera-movement tags go: their own field, inside the prompt only, or nowhere.
    camera_tags: Literal["field", "prompt", "none"] = "field"
    # Aspect ratios the upstream takes; () means the field is not accepted at all.
    aspect_ratios: tuple[str, ...] = ("16:9", "9:16", "1:1")

    def durations_at(self, resolution: str) -> tuple[int, ...]:
        return self.durations_by_resolution.get(resolution, self.durations)


@dataclass(frozen=True)
class Generation:
    """What one generation of the upstream accepts and offers."""

    version: ApiVersion
    models: tuple[ModelSpec, ...]
    # How images are sent: a list of reference images, or first/last frame fields.
    image_form: Literal["image_urls", "frames"]
    # POST /v1/tasks honours Idempotency-Key (a repeat within 24 h: same task, one bill).
    idempotency_keys: bool
    # POST /v1/tasks honours `Prefer: wait=N`; else POST /v1/tasks/sync is the way to wait.
    prefer_wait: bool
    # The body fields every model takes, beyond each model's own (seed, last frame, ...).
    common_fields: frozenset[str]
    # How its answers are shaped: time unit, progress, URLs, billing, error codes, cancel.
    wire: Wire
    # Whether every model of the catalog in force is offered (2026-09), or only this
    # generation's own Hailuo models (2026-04: the April page knew no other family).
    offers_catalog: bool = True
    # Where prices come from: the catalog in force, or the April per-second table
    # (prices.json, or QGW_PRICE_TABLE), which an upstream of 2026-04 still charges.
    prices_from: Literal["catalog", "april_per_second"] = "catalog"

    @functools.cached_property
    def _by_id(self) -> dict[str, ModelSpec]:
        return {spec.id: spec for spec in self.models}

    def offers(self, model_id: str) -> bool:
        """A Hailuo model this generation translates for (its own form and rules)."""
        return model_id in self._by_id

    def model(self, model_id: str) -> ModelSpec:
        spec = self._by_id.get(model_id)
        if spec is not None:
            return spec
        offered = ", ".join(m.id for m in self.models)
        if resolutions_of(model_id):
            raise InvalidRequest(
                f"model: {model_id} is not offered by the configured Qingbo API "
                f"({self.version}); available: {offered}",
                param="model",
            )
        raise InvalidRequest(
            f"model: unknown model {model_id!r}; available: {offered}", param="model"
        )

    def accepted_fields(self, spec: ModelSpec) -> frozenset[str]:
        """The body fields this generation's `spec` accepts, and nothing else."""
        extra = {"seed"} if spec.seed else set()
        if self.image_form == "frames":
            extra |= {"first_frame_image"} | ({"last_frame_image"} if spec.last_frame else set())
        else:
            extra |= {"image_urls"}
        if spec.camera_tags == "field":
            extra.add("camera_movement_tags")
        if spec.aspect_ratios:
            extra.add("aspect_ratio")
        return self.common_fields | extra


_DESCRIPTIONS = {
    "minimax-hailuo-02": "MiniMax Hailuo 02: text, first frame, first and last frame",
    "minimax-hailuo-2.3": "MiniMax Hailuo 2.3: text-to-video and image-to-video",
    "minimax-hailuo-2.3-fast": "MiniMax Hailuo 2.3 fast: cheaper accelerated tier",
}
_COMMON = frozenset(
    {
        "model",
        "action",
        "prompt",
        "resolution",
        "duration",
        "watermark",
        "prompt_optimizer",
        "fast_pretreatment",
        "callback_url",
        "callback_events",
    }
)


def _hailuo_23(model_id: str, **rules: object) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        family="hailuo",
        description=_DESCRIPTIONS[model_id],
        resolutions=("768p", "1080p"),
        durations=(6, 10),
        durations_by_resolution={"1080p": (6,)},
        **rules,  # type: ignore[arg-type]
    )


APRIL_2026 = Generation(
    version="2026-04",
    models=(_hailuo_23("minimax-hailuo-2.3"), _hailuo_23("minimax-hailuo-2.3-fast")),
    image_form="image_urls",
    idempotency_keys=False,
    prefer_wait=False,
    common_fields=_COMMON,
    wire=APRIL_2026_WIRE,
    offers_catalog=False,
    prices_from="april_per_second",
)

# hailuo.mdx: none of the three takes image_urls, aspect_ratio or camera_movement_tags;
# 2.3 and 2.3-fast take tags inside the prompt; only 02 takes a last frame. Since
# 2026-09-24 none takes a seed (qingbo-catalog.md; the catalog's hailuo.json agrees).
_CURRENT = {"aspect_ratios": (), "camera_tags": "prompt", "seed": False, "max_images": 1}
SEPTEMBER_2026 = Generation(
    version="2026-09",
    models=(
        ModelSpec(
            id="minimax-hailuo-02",
            family="hailuo",
            description=_DESCRIPTIONS["minimax-hailuo-02"],
            resolutions=("512p", "768p", "1080p"),
            durations=(5, 10),
            durations_by_resolution={"1080p": (5,)},
            default_duration=5,
            max_images=2,
            first_frame_only=("512p",),
            last_frame=True,
            camera_tags="none",
            aspect_ratios=(),
        ),
        _hailuo_23("minimax-hailuo-2.3", **_CURRENT),
        _hailuo_23("minimax-hailuo-2.3-fast", first_frame_required=True, **_CURRENT),
    ),
    image_form="frames",
    idempotency_keys=True,
    prefer_wait=True,
    common_fields=_COMMON,
    wire=SEPTEMBER_2026_WIRE,
)

GENERATIONS: dict[str, Generation] = {g.version: g for g in (APRIL_2026, SEPTEMBER_2026)}


def generation(version: str) -> Generation:
    return GENERATIONS[version]


def all_model_ids() -> list[str]:
    """Every model any generation offers, in catalog order."""
    seen: dict[str, None] = {}
    for gen in GENERATIONS.values():
        seen.update((m.id, None) for m in gen.models)
    return list(seen)


def resolutions_of(model_id: str) -> tuple[str, ...]:
    """Every resolution any generation offers for `model_id` (what a price must cover)."""
    found: dict[str, None] = {}
    for gen in GENERATIONS.values():
        for spec in gen.models:
            if spec.id == model_id:
                found.update((r, None) for r in spec.resolutions)
    return tuple(found)
