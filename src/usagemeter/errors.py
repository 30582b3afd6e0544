"""Exception types that say what is wrong, so callers and the CLI can answer precisely."""

from __future__ import annotations


class UsagemeterError(Exception):
    """Base of every error usagemeter raises on purpose."""


class ConfigurationError(UsagemeterError):
    """A setting is missing or malformed (database URL, data directory)."""


class MigrationError(UsagemeterError):
    """Migrations could not be applied; the database was left as it was before the failing one."""


class MigrationFileError(MigrationError):
    """A file in supabase/migrations does not follow the <14-digit timestamp>_<name>.sql naming."""


class MigrationChanged(MigrationError):
    """An applied migration's file no longer matches what was applied: history would lie."""


class EmbeddedServerError(UsagemeterError):
    """The embedded PostgreSQL could not be initialised, started or stopped."""
