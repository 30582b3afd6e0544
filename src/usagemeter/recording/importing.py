"""Recording JSON Lines: parse, validate and write line by line, reporting an outcome per line.

The CLI's `usagemeter record --file` is a thin shell over this. Lenient mode stores every valid
line whatever happens to the others: a line that is not UTF-8, not JSON, too deeply nested, not
valid Unicode, invalid, or refused by the database gets its own error and the rest are stored.
Strict mode stores all lines or none. Lines are bytes, so one bad byte spoils only its own line.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import pydantic

from usagemeter import errors
from usagemeter.db import refusals
from usagemeter.recording import enqueuer
from usagemeter.recording.event import UsageEvent
from usagemeter.recording.recorder import Recorded, Recorder, validate_events

CHUNK = 1000


@dataclass(frozen=True)
class LineOutcome:
    """What happened to one input line: stored (id, duplicate) or refused (error)."""

    line: int
    recorded: Recorded | None = None
    error: str | None = None

    def as_json(self) -> str:
        if self.recorded is not None:
            return json.dumps({"line": self.line, "id": str(self.recorded.id), "duplicate": self.recorded.duplicate})
        return json.dumps({"line": self.line, "error": self.error})


def parse_line(raw: bytes | str, *, default_user: uuid.UUID | None = None) -> UsageEvent:
    """One JSON Lines record with the Python API's field names; errors say what is wrong.

    `default_user` fills a missing user_id, as the Python API does for a recorder acting as a user.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as failure:
        assert isinstance(raw, bytes)
        raise errors.InvalidEvent(f"not UTF-8: byte 0x{raw[failure.start]:02x} at column {failure.start + 1}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as failure:
        raise errors.InvalidEvent(f"not JSON: {failure.msg} at column {failure.colno}") from None
    except RecursionError:
        raise errors.InvalidEvent("not JSON this reader accepts: nested too deeply") from None
    if not isinstance(value, dict):
        raise errors.InvalidEvent(f"expected a JSON object, got {type(value).__name__}")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as failure:
        raise errors.InvalidEvent(
            f"not valid Unicode: a lone surrogate ({failure.object[failure.start]!a}) cannot be stored"
        ) from None
    if default_user is not None and value.get("user_id") is None:
        value["user_id"] = str(default_user)
    try:
        return validate_events([value])[0]
    except errors.InvalidEvent as failure:
        raise errors.InvalidEvent(str(failure).removeprefix("event 0: "), field=failure.field) from None


def _numbered(lines: Iterable[bytes | str]) -> Iterator[tuple[int, bytes | str]]:
    for number, text in enumerate(lines, start=1):
        if text.strip():
            yield number, text


def _parsed(lines: Iterable[bytes | str], default_user: uuid.UUID | None) -> Iterator[tuple[int, UsageEvent | str]]:
    for number, text in _numbered(lines):
        try:
            yield number, parse_line(text, default_user=default_user)
        except (errors.InvalidEvent, pydantic.ValidationError) as failure:
            yield number, str(failure)


def _message(failure: BaseException) -> str:
    return enqueuer.describe_failure(failure)


def _database_wide(failure: Exception) -> errors.DatabaseUnavailable:
    return errors.DatabaseUnavailable(f"the database takes no writes now: {_message(failure)}")


def _write_one(recorder: Recorder, event: UsageEvent) -> Recorded | str:
    try:
        return recorder.record_many([event])[0]
    except errors.DatabaseUnavailable:
        raise
    except Exception as failure:  # whatever one event meets is that event's error line, not the run's end
        if refusals.is_database_wide(failure):
            raise _database_wide(failure) from failure
        return _message(failure)


def _write_chunk(recorder: Recorder, events: Sequence[UsageEvent]) -> list[Recorded | str]:
    """The chunk in one transaction; if anything in it fails, event by event so only the failing ones fail."""
    try:
        return list(recorder.record_many(events))
    except errors.DatabaseUnavailable:
        raise
    except Exception as failure:  # narrowed down below, never the end of the run
        if refusals.is_database_wide(failure):
            raise _database_wide(failure) from failure
    try:
        results = recorder.record_each(events)
    except errors.DatabaseUnavailable:
        raise
    except Exception:  # a failure record_each cannot attribute: one event at a time
        return [_write_one(recorder, event) for event in events]
    return [r if isinstance(r, Recorded) else _message(r) for r in results]


def record_lines_leniently(
    recorder: Recorder, lines: Iterable[bytes | str], on_outcome: Callable[[LineOutcome], None]
) -> None:
    """Store every valid line, in chunks: a chunk the database refuses is retried event by event."""
    chunk: list[tuple[int, UsageEvent]] = []

    def flush() -> None:
        if not chunk:
            return
        results = _write_chunk(recorder, [event for _, event in chunk])
        for (number, _), result in zip(chunk, results, strict=True):
            if isinstance(result, Recorded):
                on_outcome(LineOutcome(number, recorded=result))
            else:
                on_outcome(LineOutcome(number, error=result))
        chunk.clear()

    for number, parsed in _parsed(lines, recorder.identity.user_id):
        if isinstance(parsed, str):
            on_outcome(LineOutcome(number, error=parsed))
            continue
        chunk.append((number, parsed))
        if len(chunk) >= CHUNK:
            flush()
    flush()


def record_lines_strictly(
    recorder: Recorder, lines: Iterable[bytes | str], on_outcome: Callable[[LineOutcome], None]
) -> None:
    """All lines or none: any invalid line, or any refusal by the database, and nothing is stored."""
    parsed = list(_parsed(lines, recorder.identity.user_id))
    invalid = [LineOutcome(number, error=p) for number, p in parsed if isinstance(p, str)]
    if invalid:
        for outcome in invalid:
            on_outcome(outcome)
        return
    numbers = [number for number, _ in parsed]
    events = [p for _, p in parsed if isinstance(p, UsageEvent)]
    try:
        results = recorder.record_many(events)
    except (errors.EventRejected, errors.IdempotencyConflict, errors.InvalidEvent) as failure:
        on_outcome(LineOutcome(numbers[failure.index], error=str(failure).split(": ", 1)[-1]))
        return
    for number, result in zip(numbers, results, strict=True):
        on_outcome(LineOutcome(number, recorded=result))
