"""The garbage collector and long-lived processes (the API, the worker, the simulator)."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move what start-up built (modules, the app, pydantic's and FastAPI's tables) out of
    the garbage collector's reach: a full collection otherwise walks all of it, and those
    pauses were the API's tail latency (bench/submit.py's p99 at c=16;
    docs/decisions/009-heap-freeze.md). Cycles made later are still collected."""
    gc.collect()
    gc.freeze()
