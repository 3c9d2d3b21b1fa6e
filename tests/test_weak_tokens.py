"""A weak admin or metrics token stops the api and the worker at start (issue 31, point 9):
run as real processes, they exit 2 naming the setting, never its value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import MIN_TOKEN_CHARS
from tests.conftest import ADMIN_TOKEN


def start(role: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QGW_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *role],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )


STRONG = "s" * MIN_TOKEN_CHARS


@pytest.mark.parametrize("setting", ["QGW_ADMIN_TOKEN", "QGW_METRICS_TOKEN"])
@pytest.mark.parametrize(
    "weak",
    [
        "hunter2-is-short",  # under 32 characters
        "x" * (MIN_TOKEN_CHARS - 1),
        "REPLACE_ME",  # deploy/k8s/secret.yaml's template value
        "REPLACE_ME-but-made-long-enough-to-pass-a-length-rule",
    ],
)
@pytest.mark.parametrize("role", [["api", "--port", "0"], ["worker", "--burst"]])
def test_a_weak_token_stops_the_role_naming_the_setting_not_the_value(
    tmp_path: Path, setting: str, weak: str, role: list[str]
) -> None:
    other = "QGW_METRICS_TOKEN" if setting == "QGW_ADMIN_TOKEN" else "QGW_ADMIN_TOKEN"
    refused = start(role, tmp_path, **{setting: weak, other: STRONG})
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"configuration error: {setting}:" in refused.stderr, refused.stderr[-2000:]
    assert weak not in refused.stderr + refused.stdout
    assert other not in refused.stderr  # only the weak one is named


def test_the_suite_token_is_strong() -> None:
    """The suite starts real api and worker processes with it."""
    assert len(ADMIN_TOKEN) >= MIN_TOKEN_CHARS
