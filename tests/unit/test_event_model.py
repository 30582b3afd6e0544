"""model= and the cached-input counts: checked in Python by the rules the database applies."""

from __future__ import annotations

import uuid

import pydantic
import pytest

from usagemeter.recording.event import UsageEvent

USER = uuid.uuid4()


def test_model_is_kept_in_metadata_where_the_database_reads_it() -> None:
    event = UsageEvent.model_validate({"action": "ai:chat:completion", "user_id": USER, "model": "gpt-4o"})
    assert event.metadata == {"model": "gpt-4o"}
    assert event.model == "gpt-4o"


def test_model_agreeing_with_metadata_is_accepted_and_a_different_one_refused() -> None:
    same = {"action": "a:b:c", "user_id": USER, "model": "m", "metadata": {"model": "m", "k": 1}}
    assert UsageEvent.model_validate(same).metadata == {"model": "m", "k": 1}
    with pytest.raises(pydantic.ValidationError, match=r"differs from metadata\.model"):
        UsageEvent.model_validate({**same, "metadata": {"model": "other"}})


@pytest.mark.parametrize("model", ["", 42])
def test_model_must_be_a_non_empty_string(model: object) -> None:
    with pytest.raises(pydantic.ValidationError, match="model must be a non-empty string"):
        UsageEvent.model_validate({"action": "a:b:c", "user_id": USER, "model": model})


def test_a_model_name_longer_than_the_column_takes_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="at most 200 characters"):
        UsageEvent.model_validate({"action": "a:b:c", "user_id": USER, "model": "m" * 201})


@pytest.mark.parametrize(
    ("metadata", "tokens_input", "problem"),
    [
        ({"tokens_cached_input": 11}, 10, "must not exceed tokens_input"),
        ({"tokens_cached_input": 6, "tokens_cache_write": 5}, 10, "must not exceed tokens_input"),
        ({"tokens_cached_input": -1}, 10, "whole number >= 0"),
        ({"tokens_cached_input": 1.5}, 10, "whole number >= 0"),
        ({"tokens_cache_write": True}, 10, "whole number >= 0"),
        ({"tokens_cache_write": "3"}, 10, "whole number >= 0"),
    ],
)
def test_cache_counts_are_parts_of_tokens_input(metadata: dict[str, object], tokens_input: int, problem: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=problem):
        UsageEvent.model_validate(
            {"action": "a:b:c", "user_id": USER, "tokens_input": tokens_input, "metadata": metadata}
        )


def test_cache_counts_within_tokens_input_are_accepted() -> None:
    event = UsageEvent.model_validate(
        {
            "action": "a:b:c",
            "user_id": USER,
            "tokens_input": 10,
            "metadata": {"tokens_cached_input": 6, "tokens_cache_write": 4.0},
        }
    )
    assert event.metadata["tokens_cached_input"] == 6
