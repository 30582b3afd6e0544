"""Benchmarks are not timed tests, but they must keep running: each runs on a tiny data set here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FEW_DIRECT_WRITERS = ["--writers", "4", "--contention-seconds", "1"]
BENCHMARKS = {
    "rls_read.py": (
        ["--rows", "3000", "--repeat", "2"],
        ["ours_vs_norls_filtered", "ours_vs_norls_unfiltered", "spec_vs_ours_unfiltered"],
    ),
    "ingest.py": (
        ["--rows", "2000", "--naive-rows", "50", "--group-rows", "320", "--json", *FEW_DIRECT_WRITERS],
        [
            "copy_rows_per_s",
            "batch_vs_copy",
            "group_commit_vs_naive",
            "async_group_commit_vs_naive",
            "enqueue_us_per_call",
            "single_tenant_vs_spread",
            "batch_budgets_vs_none",
            "single_budgets_vs_none",
        ],
    ),
    "http.py": (
        ["--seconds", "1", "--connections", "8"],
        [
            "single_events_per_s",
            "single_p99_ms",
            "batch_events_per_s",
            "inprocess_batch_events_per_s",
            "batch_vs_inprocess",
        ],
    ),
    "scale.py": (
        ["--rows", "3000", "--month-rows", "2000", "--repeat", "2", "--cluster-events", "0"],
        ["partitioned_vs_plain_summary", "drop_vs_delete_speedup", "conversion_rows_per_s", "archive_rows_per_s"],
    ),
    "integrations.py": (
        ["--calls", "40", "--spans", "1500"],
        ["bare_call_us_p50", "metered_call_us_p50", "wrapper_inline_us_p50", "events_stored", "otlp_vs_record_many"],
    ),
    "reports.py": (
        ["--rows", "5000", "--repeat", "2"],
        [
            "summary_p95_ms_max",
            "largest_tenant_speedup_vs_raw",
            "export_rows_per_s",
            "load_rows_per_s",
            "cost_summary_p95_ms",
            "cost_summary_speedup_vs_raw",
            "largest_tenant_month_cost",  # prices loaded before the events: the month costs something
            "statement_p95_ms",
        ],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", list(BENCHMARKS))
def test_benchmark_prints_its_summary_line(repo_root: Path, server_url: str, script: str) -> None:
    arguments, keys = BENCHMARKS[script]
    result = subprocess.run(
        [sys.executable, str(repo_root / "bench" / script), *arguments, "--database-url", server_url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in keys:
        assert summary[key] > 0, key
