"""Benchmarks are not timed tests, but they must keep running: each runs on a tiny data set here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_rls_read_benchmark_prints_its_summary_line(repo_root: Path, server_url: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(repo_root / "bench" / "rls_read.py"),
            "--rows",
            "3000",
            "--repeat",
            "2",
            "--database-url",
            server_url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("ours_vs_norls_filtered", "ours_vs_norls_unfiltered", "spec_vs_ours_unfiltered"):
        assert summary[key] > 0, key
    assert summary["rows"] == 3000


@pytest.mark.slow
def test_ingest_benchmark_prints_its_summary_line(repo_root: Path, server_url: str) -> None:
    result = subprocess.run(
        [sys.executable, str(repo_root / "bench" / "ingest.py"), "--rows", "2000", "--naive-rows", "50",
         "--group-rows", "320", "--json", "--database-url", server_url],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("copy_rows_per_s", "batch_vs_copy", "group_commit_vs_naive", "enqueue_us_per_call"):
        assert summary[key] > 0, key


@pytest.mark.slow
def test_reports_benchmark_prints_its_summary_line(repo_root: Path, server_url: str) -> None:
    result = subprocess.run(
        [sys.executable, str(repo_root / "bench" / "reports.py"), "--rows", "5000", "--repeat", "2",
         "--database-url", server_url],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("summary_p95_ms_max", "largest_tenant_speedup_vs_raw", "export_rows_per_s"):
        assert summary[key] > 0, key
