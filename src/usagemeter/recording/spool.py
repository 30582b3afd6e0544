"""The durable spool: enqueued events the database could not take yet, in append-only local files.

Layout under the spool directory (0700; every file 0600):

    <dir>/<pid>-<random>/spool.jsonl   one process's records, oldest first (created on its first spool)
    <dir>/<pid>-<random>/replayed      how many bytes of spool.jsonl are settled (written or rejected)
    <dir>/<pid>-<random>/.lock         flock held while that process lives
    <dir>/rejected.jsonl               records the database refused or that cannot be read, with why

Each append is one write of whole JSON lines followed by fsync, so what `append` returned from
survives a crash or SIGKILL; a failed append is cut back, so no torn line is left for a later one to
glue onto. Records keep the event id chosen before the first attempt, so replaying one that did
reach the database finds it stored instead of doubling it. Replay reads a bounded batch at a time
and saves its progress after each, so a replay cut short resumes where it stopped. A process whose
lock is free is dead: any other process may claim its spool and replay it. Whoever can write these
files can record as anyone (lines carry a role and claims): keep the directory private.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import pydantic

from usagemeter import durable, errors
from usagemeter.db import Identity
from usagemeter.recording.event import UsageEvent
from usagemeter.recording.writer import Pending

log = logging.getLogger("usagemeter.spool")

SPOOL_FILE = "spool.jsonl"
PROGRESS_FILE = "replayed"
LOCK_FILE = ".lock"
REJECTED_FILE = "rejected.jsonl"
MAX_LINE_BYTES = 1 << 20  # far above the largest valid record (16 KiB of metadata, escaped)
_RECORD_START = b'{"role":'
ROLES = ("anon", "authenticated", "service_role")  # what the pool's login role may switch to


class SpooledEvent(NamedTuple):
    """An event waiting for the database, with who writes it and the id it will have (a tuple: cheap per event)."""

    identity: Identity
    pending: Pending

    def to_line(self) -> str:
        """One JSON line, ASCII only (lone surrogates become escapes, so any event can be spooled)."""
        return json.dumps(
            {
                "role": self.identity.role,
                "claims": dict(self.identity.claims),
                "id": str(self.pending.id),
                "event": self.pending.event.model_dump(mode="json", exclude_none=True),
            },
            separators=(",", ":"),
            default=str,  # claims are sent to the database the same way (db.identity.become)
        )

    @classmethod
    def from_line(cls, line: str) -> SpooledEvent:
        record: dict[str, Any] = json.loads(line)
        role, claims = record["role"], record["claims"]
        if role not in ROLES or not isinstance(claims, dict):
            raise ValueError(f"role must be one of {', '.join(ROLES)} and claims an object")
        identity = Identity(role=role, claims=claims)
        event = UsageEvent.model_validate(record["event"])
        return cls(identity, Pending(uuid.UUID(record["id"]), event))


@dataclass(frozen=True)
class Unreadable:
    """Bytes of a spool line that are not a record (garbage, a torn write): kept in rejected.jsonl."""

    raw: bytes
    reason: str


@dataclass(frozen=True)
class Line:
    """One line of a spool file, where it ends, and what it holds."""

    start: int
    end: int
    items: list[SpooledEvent | Unreadable]


def _describe(failure: BaseException) -> str:
    if isinstance(failure, RecursionError):
        return "not a spool record: JSON nested too deeply"
    if isinstance(failure, pydantic.ValidationError):  # the first rule broken, as record() would name it
        field, message = errors.first_problem(failure)
        return f"not a valid event: {field}: {message}" if field else f"not a valid event: {message}"
    return f"not a spool record: {type(failure).__name__}: {failure}"


def _parse(raw: bytes) -> SpooledEvent | str:
    try:
        return SpooledEvent.from_line(raw.decode("utf-8"))
    except Exception as failure:  # anything on disk may be broken: each way ends in rejected.jsonl
        return _describe(failure)


def parse_line(raw: bytes) -> list[SpooledEvent | Unreadable]:
    """A line's records; a torn write glued to a later append gives the torn part and the later record."""
    parsed = _parse(raw)
    if isinstance(parsed, SpooledEvent):
        return [parsed]
    start = raw.find(_RECORD_START, 1)
    while start > 0:
        later = _parse(raw[start:])
        if isinstance(later, SpooledEvent):
            return [Unreadable(raw[:start], "torn write (a record cut short, then a later append)"), later]
        start = raw.find(_RECORD_START, start + 1)
    return [Unreadable(raw, parsed)]


class SpoolFile:
    """One process's spool directory: its records, how far replay got, and the lock that says it is owned."""

    def __init__(self, directory: Path, lock: IO[bytes], *, removable: bool = True) -> None:
        self.directory = directory
        self.path = directory / SPOOL_FILE
        self.progress_path = directory / PROGRESS_FILE
        self._lock: IO[bytes] | None = lock
        self._removable = removable
        self.size = _size(self.path)
        self.replayed = self._read_progress()

    @classmethod
    def create(cls, base: Path) -> SpoolFile:
        """A new spool for this process, locked from the start."""
        directory = base / f"{os.getpid()}-{secrets.token_hex(4)}"
        directory.mkdir(mode=0o700)
        lock = _open_lock(directory / LOCK_FILE)
        fcntl.flock(lock, fcntl.LOCK_EX)  # a new name: nobody else holds it
        return cls(directory, lock)

    @classmethod
    def claim(cls, directory: Path, *, removable: bool = True) -> SpoolFile | None:
        """The spool of a dead process, locked for us; None while its owner lives or another claimed it."""
        lock_path = directory / LOCK_FILE
        try:
            lock = _open_lock(lock_path)
        except FileNotFoundError:  # the directory was removed meanwhile
            return None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(lock.fileno()).st_ino != lock_path.stat().st_ino:
                raise FileNotFoundError(lock_path)  # replayed and removed by another process meanwhile
        except (BlockingIOError, FileNotFoundError):
            lock.close()
            return None
        return cls(directory, lock, removable=removable)

    def pending(self) -> bool:
        return self.size > self.replayed

    def append(self, data: bytes) -> None:
        """Append durably; on failure (disk full) cut the file back to what it was, and raise OSError."""
        created = not self.path.exists()
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(descriptor, view) :]
                os.fsync(descriptor)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(descriptor, self.size)
                raise
        finally:
            os.close(descriptor)
        if created:
            durable.sync_directory(self.directory)
        self.size += len(data)

    def batches(self, *, max_records: int, max_bytes: int) -> Iterator[list[Line]]:
        """The unsettled lines, a bounded batch at a time, so replay memory does not grow with the spool."""
        if not self.pending():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.replayed)
            batch: list[Line] = []
            held = 0
            while True:
                line = _read_line(handle)
                if line is not None:
                    batch.append(line)
                    held += line.end - line.start
                if batch and (line is None or len(batch) >= max_records or held >= max_bytes):
                    yield batch
                    batch, held = [], 0
                if line is None:
                    return

    def mark_replayed(self, offset: int) -> None:
        """Record durably that everything before `offset` is settled; an all-settled file starts over empty."""
        if offset == self.replayed:
            return
        if offset >= self.size:
            with self.path.open("r+b") as handle:
                handle.truncate(0)
                os.fsync(handle.fileno())
            self.size = offset = 0  # a crash before the next line leaves progress past the end: read as 0
        descriptor = os.open(self.progress_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(descriptor, f"{offset:020d}\n".encode("ascii"), 0)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        self.replayed = offset

    def close(self) -> None:
        """Let go: an empty spool is removed, one with records stays for the next process to claim."""
        if self._lock is None:
            return
        if self._removable and not self.pending():
            for name in (SPOOL_FILE, PROGRESS_FILE, LOCK_FILE):
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / name).unlink()
            with contextlib.suppress(OSError):
                self.directory.rmdir()
        elif not self._removable and not self.pending():
            with contextlib.suppress(FileNotFoundError):
                self.progress_path.unlink()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
        self._lock = None

    def _read_progress(self) -> int:
        try:
            offset = int(self.progress_path.read_bytes().strip() or b"0")
        except (FileNotFoundError, ValueError):
            return 0
        return offset if 0 <= offset <= self.size else 0  # unreadable or stale: replaying again is harmless


class Spool:
    """The spool directory: this process's spool (made on first use), spools adopted from dead processes, rejects."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            directory.chmod(0o700)  # records carry roles and claims: only this user may read or add them
        self.rejected_path = directory / REJECTED_FILE
        self.own: SpoolFile | None = None
        self.adopted: list[SpoolFile] = []

    def pending(self) -> bool:
        return (self.own is not None and self.own.pending()) or any(f.pending() for f in self.adopted)

    def append(self, data: bytes, *, past_limit: bool = False) -> bool:
        """Append lines durably, within max_bytes unless `past_limit`; False when they were not stored."""
        size = self.own.size if self.own is not None else 0
        if not past_limit and size + len(data) > self.max_bytes:
            return False
        try:
            if self.own is None:
                self.own = SpoolFile.create(self.directory)
            self.own.append(data)
        except OSError as failure:
            log.warning("cannot spool %d bytes in %s: %s", len(data), self.directory, failure)
            return False
        return True

    def replayable(self) -> list[SpoolFile]:
        """Spools with unsettled records, this process's first."""
        files = [self.own] if self.own is not None else []
        return [f for f in files + self.adopted if f.pending()]

    def adopt_orphans(self) -> int:
        """Claim the spools of dead processes (and a spool.jsonl of older versions); returns how many."""
        known = {f.directory for f in self.adopted} | ({self.own.directory} if self.own else set())
        candidates = [(self.directory, False)] if _size(self.directory / SPOOL_FILE) else []
        with contextlib.suppress(FileNotFoundError):
            candidates += [
                (d, True) for d in self.directory.iterdir() if not d.name.startswith(".") and (d / SPOOL_FILE).exists()
            ]
        claimed = 0
        for directory, removable in candidates:
            if directory in known:
                continue
            spool_file = SpoolFile.claim(directory, removable=removable)
            if spool_file is None:
                continue
            if spool_file.pending():
                self.adopted.append(spool_file)
                claimed += 1
            else:
                spool_file.close()  # a dead process's empty spool: tidy it away
        return claimed

    def release_replayed(self) -> None:
        """Let go of adopted spools that are fully replayed (removing them)."""
        for spool_file in [f for f in self.adopted if not f.pending()]:
            spool_file.close()
            self.adopted.remove(spool_file)

    def reject(self, what: SpooledEvent | Unreadable, reason: str) -> None:
        """Keep a refused or unreadable record and why, so an operator can fix and replay it: never a silent drop."""
        entry: dict[str, Any] = {"reason": reason}
        if isinstance(what, Unreadable):
            entry["line"] = what.raw.decode("utf-8", errors="surrogateescape")
        else:
            try:
                entry["record"] = json.loads(what.to_line())
            except (TypeError, ValueError, RecursionError):
                entry["record_repr"] = repr(what)
        line = (json.dumps(entry) + "\n").encode("ascii")
        try:
            descriptor = os.open(self.rejected_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, line)  # one write: lines of several processes do not interleave
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as failure:  # the log is then the only copy: say so loudly, with the record
            log.error("cannot write %s (%s); rejected record: %s", self.rejected_path, failure, line.decode().strip())

    def close(self) -> None:
        for spool_file in [*self.adopted, *([self.own] if self.own else [])]:
            spool_file.close()
        self.adopted = []
        self.own = None


def has_leftovers(directory: Path) -> bool:
    """Whether any spool under `directory` holds records (cheap: no locks taken)."""
    if _size(directory / SPOOL_FILE):
        return True
    try:
        return any(_size(d / SPOOL_FILE) for d in directory.iterdir() if not d.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return False


def encode(records: Sequence[SpooledEvent]) -> bytes:
    return "".join(record.to_line() + "\n" for record in records).encode("ascii")


def _read_line(handle: IO[bytes]) -> Line | None:
    start = handle.tell()
    raw = handle.readline(MAX_LINE_BYTES)
    if not raw:
        return None
    if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
        while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass  # skip the rest of an overlong line without holding it
        return Line(start, handle.tell(), [Unreadable(raw[:200], f"line longer than {MAX_LINE_BYTES} bytes")])
    end = handle.tell()
    content = raw.strip()
    return Line(start, end, parse_line(content) if content else [])


def _open_lock(path: Path) -> IO[bytes]:
    return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return 0
