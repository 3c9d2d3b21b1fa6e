"""Long-lived processes keep what start-up built out of the garbage collector's walks."""

from __future__ import annotations

import gc
from typing import Any


def test_the_api_freezes_its_start_up_heap(app_resources: tuple[Any, Any]) -> None:
    # The session's app has run its lifespan start-up (service/app.py).
    assert gc.get_freeze_count() > 10_000
