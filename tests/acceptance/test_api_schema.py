"""Schemathesis against /openapi.json: whatever it sends, no 500, and every answer matches the document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.http_server import RunningApi

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
SEED = "20261204"  # fixed, so a failure is reproducible; raise --max-examples to search wider


def schemathesis(
    api: RunningApi, token: str | None, max_examples: int, workdir: Path
) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("st")), "run", f"{api.base_url}/openapi.json", "--checks", CHECKS,
        "--max-examples", str(max_examples), "--seed", SEED, "--workers", "2",
        "--phases", "examples,coverage,fuzzing", "--request-timeout", "30",
    ]  # fmt: skip
    if token is not None:
        command += ["--header", f"Authorization: Bearer {token}"]
    # In a scratch folder: schemathesis keeps a cache (.schemathesis/) in its working directory.
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=workdir)


@pytest.mark.schemathesis
@pytest.mark.parametrize("caller", ["member", "service", "nobody"])
def test_no_input_makes_a_500_or_breaks_the_schema(
    api_server: RunningApi, owner: psycopg.Connection[Any], caller: str, tmp_path: Path
) -> None:
    user = factories.add_user(owner)
    tenant = factories.add_tenant(owner)
    factories.add_member(owner, tenant, user, "owner")
    factories.add_event(owner, tenant_id=tenant, user_id=user)
    token = {"member": api_server.token(user), "service": api_server.token(role="service_role"), "nobody": None}[caller]
    result = schemathesis(api_server, token, max_examples=40, workdir=tmp_path)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
    assert "generated" in result.stdout
