"""The durable spool: enqueued events the database could not take yet, in an append-only local file.

Each append is one write of whole JSON lines followed by fsync, so what `append` returned from
survives a crash or SIGKILL. Records keep the event id chosen before the first attempt: replaying
a record that did reach the database finds it stored instead of doubling it, so a replay cut
short by a crash is simply replayed again. One process owns a spool directory at a time (flock).
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from usagemeter import errors
from usagemeter.db import Identity
from usagemeter.recording.event import UsageEvent
from usagemeter.recording.writer import Pending


@dataclass(frozen=True)
class SpooledEvent:
    """An event waiting for the database, with who writes it and the id it will have."""

    identity: Identity
    pending: Pending

    def to_line(self) -> str:
        return json.dumps(
            {
                "role": self.identity.role,
                "claims": dict(self.identity.claims),
                "id": str(self.pending.id),
                "event": self.pending.event.model_dump(mode="json", exclude_none=True),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_line(cls, line: str) -> SpooledEvent:
        record: dict[str, Any] = json.loads(line)
        identity = Identity(role=record["role"], claims=record["claims"])
        event = UsageEvent.model_validate(record["event"])
        return cls(identity, Pending(uuid.UUID(record["id"]), event))


class Spool:
    """`<directory>/spool.jsonl`, with the records not yet written, oldest first; rejects go to rejected.jsonl."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "spool.jsonl"
        self.rejected_path = directory / "rejected.jsonl"
        self._lock: IO[str] | None = (directory / ".lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise errors.ConfigurationError(
                f"spool directory {directory} is in use by another recorder; give each process its own spool_dir"
            ) from None
        self._drop_torn_tail()

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def has_records(self) -> bool:
        return self.size > 0

    def append(self, records: Sequence[SpooledEvent], *, past_limit: bool = False) -> bool:
        """Append durably if within max_bytes (or `past_limit`); when this returns True, the records survive a crash."""
        data = "".join(record.to_line() + "\n" for record in records).encode("utf-8")
        if not past_limit and self.size + len(data) > self.max_bytes:
            return False
        _append_synced(self.path, data)
        return True

    def read(self) -> list[SpooledEvent]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as handle:
            return [SpooledEvent.from_line(line) for line in handle if line.strip()]

    def clear(self) -> None:
        """Forget the records: call only after all of them were written."""
        with self.path.open("r+b") as handle:
            handle.truncate(0)
            os.fsync(handle.fileno())

    def reject(self, record: SpooledEvent, reason: str) -> None:
        """Keep a refused event and why, so an operator can fix and replay it: never a silent drop."""
        line = json.dumps({"reason": reason, "record": json.loads(record.to_line())}) + "\n"
        _append_synced(self.rejected_path, line.encode("utf-8"))

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _drop_torn_tail(self) -> None:
        """A crash in the middle of an append leaves a partial last line: it was never acknowledged."""
        if not self.has_records():
            return
        content = self.path.read_bytes()
        if content.endswith(b"\n"):
            return
        with self.path.open("r+b") as handle:
            handle.truncate(content.rfind(b"\n") + 1)
            os.fsync(handle.fileno())


def _append_synced(path: Path, data: bytes) -> None:
    created = not path.exists()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    if created:  # make the new file's directory entry durable too
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
