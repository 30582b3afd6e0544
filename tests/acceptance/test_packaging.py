"""The wheel carries the migrations, so an installed usagemeter can migrate without the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


@pytest.mark.slow
def test_wheel_ships_every_migration_byte_for_byte(repo_root: Path, tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(repo_root),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("usagemeter-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            Path(name).name: archive.read(name)
            for name in archive.namelist()
            if name.startswith("usagemeter/migrations/") and name.endswith(".sql")
        }
        names = set(archive.namelist())
        assert "usagemeter/ops/platform.sql" in names
        for flow in ("billing", "db", "ops", "recording", "reporting", "tenancy"):
            assert f"usagemeter/{flow}/queries.sql" in names
        assert "usagemeter/ops/demo.sql" in names
        assert "usagemeter/api/routes/queries.sql" in names
        for asset in ("index.html", "dashboard.js", "dashboard.css"):  # the dashboard, with no build step
            assert f"usagemeter/api/static/{asset}" in names
        starter = (repo_root / "src" / "usagemeter" / "billing" / "starter_prices.csv").read_bytes()
        assert archive.read("usagemeter/billing/starter_prices.csv") == starter
        assert "usagemeter/py.typed" in names
    sources = {p.name: p.read_bytes() for p in (repo_root / "supabase" / "migrations").glob("*.sql")}
    assert shipped == sources
