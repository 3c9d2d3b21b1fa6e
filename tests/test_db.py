"""Schema status as readiness sees it."""

from __future__ import annotations

from service.db import schema_status


def test_readiness_tolerates_a_newer_schema_but_not_an_older_one() -> None:
    assert schema_status("0001_core") == "ok"
    assert schema_status("9999_from_a_newer_release") == "ok"
    assert schema_status(None).startswith("behind")
