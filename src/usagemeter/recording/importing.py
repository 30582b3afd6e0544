"""Recording JSON Lines: parse, validate and write line by line, reporting an outcome per line.

The CLI's `usagemeter record --file` is a thin shell over this. Lenient mode stores every valid
line whatever happens to the others; strict mode stores all lines or none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pydantic

from usagemeter import errors
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


def parse_line(text: str) -> UsageEvent:
    """One JSON Lines record with the Python API's field names; errors say what is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as failure:
        raise errors.InvalidEvent(f"not JSON: {failure.msg} at column {failure.colno}") from None
    if not isinstance(value, dict):
        raise errors.InvalidEvent(f"expected a JSON object, got {type(value).__name__}")
    try:
        return validate_events([value])[0]
    except errors.InvalidEvent as failure:
        raise errors.InvalidEvent(str(failure).removeprefix("event 0: "), field=failure.field) from None


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, text in enumerate(lines, start=1):
        if text.strip():
            yield number, text


def _parsed(lines: Iterable[str]) -> Iterator[tuple[int, UsageEvent | str]]:
    for number, text in _numbered(lines):
        try:
            yield number, parse_line(text)
        except (errors.InvalidEvent, pydantic.ValidationError) as failure:
            yield number, str(failure)


def record_lines_leniently(recorder: Recorder, lines: Iterable[str], on_outcome: Callable[[LineOutcome], None]) -> None:
    """Store every valid line, in chunks: a chunk the database refuses is retried event by event."""
    chunk: list[tuple[int, UsageEvent]] = []

    def flush() -> None:
        if not chunk:
            return
        events = [event for _, event in chunk]
        results: list[Any]
        try:
            results = recorder.record_many(events)
        except (errors.EventRejected, errors.IdempotencyConflict):
            results = recorder.record_each(events)
        for (number, _), result in zip(chunk, results, strict=True):
            if isinstance(result, Recorded):
                on_outcome(LineOutcome(number, recorded=result))
            else:
                on_outcome(LineOutcome(number, error=str(result).removeprefix("event 0: ")))
        chunk.clear()

    for number, parsed in _parsed(lines):
        if isinstance(parsed, str):
            on_outcome(LineOutcome(number, error=parsed))
            continue
        chunk.append((number, parsed))
        if len(chunk) >= CHUNK:
            flush()
    flush()


def record_lines_strictly(recorder: Recorder, lines: Iterable[str], on_outcome: Callable[[LineOutcome], None]) -> None:
    """All lines or none: any invalid line, or any refusal by the database, and nothing is stored."""
    parsed = list(_parsed(lines))
    invalid = [LineOutcome(number, error=p) for number, p in parsed if isinstance(p, str)]
    if invalid:
        for outcome in invalid:
            on_outcome(outcome)
        return
    numbers = [number for number, _ in parsed]
    events = [p for _, p in parsed if isinstance(p, UsageEvent)]
    try:
        results = recorder.record_many(events)
    except (errors.EventRejected, errors.IdempotencyConflict) as failure:
        on_outcome(LineOutcome(numbers[failure.index], error=str(failure).split(": ", 1)[-1]))
        return
    for number, result in zip(numbers, results, strict=True):
        on_outcome(LineOutcome(number, recorded=result))
