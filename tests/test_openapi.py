"""openapi.yaml at the top level is exactly what the app generates."""

from __future__ import annotations

from pathlib import Path

import yaml

from service.app import create_app
from service.config import Settings
from service.platform.openapi import openapi_yaml

SPEC = Path(__file__).resolve().parent.parent / "openapi.yaml"


def test_openapi_yaml_is_current() -> None:
    generated = openapi_yaml(create_app(Settings()))
    stale = "stale: run `qingbo-gateway openapi > openapi.yaml`"
    assert SPEC.read_text("utf-8") == generated, stale


def test_spec_declares_errors_and_auth() -> None:
    spec = yaml.safe_load(SPEC.read_text("utf-8"))
    submit = spec["paths"]["/v1/tasks"]["post"]
    statuses = set(map(str, submit["responses"]))
    assert {"400", "401", "402", "403", "409", "413", "429", "500"} <= statuses
    assert "422" not in map(str, submit["responses"])
    assert submit["security"] == [{"TeamApiKey": []}]
    assert "AdminToken" in spec["components"]["securitySchemes"]
