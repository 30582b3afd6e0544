"""bench/scale_cluster.py keeps running: a tiny run on a cluster of its own prints its summary line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests import citus_cluster


def test_cluster_benchmark_prints_its_summary_line(citus: citus_cluster.CitusCluster) -> None:
    repo_root = Path(__file__).resolve().parents[2]
    build = citus_cluster.citus_dir(repo_root)  # the tier's own build (the fixture skipped without one)
    result = subprocess.run(
        [sys.executable, str(repo_root / "bench" / "scale_cluster.py"), "--events", "2000", "--repeat", "2",
         "--citus-dir", str(build)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("cluster_vs_single_ingest", "cluster_vs_single_tenant_summary", "cluster_ledger_bytes_per_event"):
        assert summary[key] > 0, key
