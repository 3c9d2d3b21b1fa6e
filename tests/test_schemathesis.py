"""Schemathesis against the live API process (real Postgres, Redis, simulator upstream):
no 500s and every answer matches openapi.yaml, including for nonsense input. Bounded."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)


def _schemathesis(
    api: str, token: str, *selection: str, tmp: Path
) -> subprocess.CompletedProcess[str]:
    st = shutil.which("st") or str(ROOT / ".venv/bin/st")
    return subprocess.run(
        [
            st,
            "run",
            str(ROOT / "openapi.yaml"),
            "--url",
            api,
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            CHECKS,
            "--max-examples",
            "15",
            "--max-time",
            "90",
            "--seed",
            "20261123",
            "--suppress-health-check",
            "all",
            "--report-dir",
            str(tmp),
            *selection,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("surface", ["team", "admin"])
def test_api_survives_schemathesis(api_server: str, surface: str, tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    team = httpx.post(
        f"{api_server}/admin/teams", json={"name": f"fuzz-{surface}"}, headers=admin
    ).json()
    key = httpx.post(f"{api_server}/admin/teams/{team['id']}/keys", json={}, headers=admin).json()[
        "key"
    ]
    if surface == "team":
        result = _schemathesis(api_server, key, "--exclude-path-regex", "^/admin", tmp=tmp_path)
    else:
        result = _schemathesis(
            api_server, ADMIN_TOKEN, "--include-path-regex", "^/admin", tmp=tmp_path
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
