"""The read flow: caller -> summaries, listings, exports -> PostgreSQL as the caller's role.

`summaries` totals (from the exact rollups), `listing` keyset pages of raw events, `exporting`
streamed files, `rendering` tables, charts, JSON and CSV, `rollup_check` the rollups' self-check, `report_sql` the
composed SQL they share.
"""
