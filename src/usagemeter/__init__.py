"""usagemeter: record and report AI token usage and billable actions per tenant on PostgreSQL."""

from __future__ import annotations

__version__ = "0.1.0"
