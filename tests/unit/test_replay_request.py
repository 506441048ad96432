"""Reconciliation's replay request to the processor: journal lines in, messages for the one exactly-once path out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import transfer
from transaction_processor.processing import MAX_REPLAY, replay_messages


def test_journal_lines_become_messages_with_their_original_ids() -> None:
    body = transfer("a", "b")
    (message,) = replay_messages({"replay": [{"message_id": "m-1", "transaction": body, "region": "us-east-1"}]})
    assert (message.message_id, json.loads(message.body)) == ("m-1", body)


@pytest.mark.parametrize(
    ("event", "says"),
    [
        ({}, "'replay' must be a list of 1 to"),
        ({"replay": []}, "'replay' must be a list of 1 to"),
        ({"replay": [{"message_id": "m", "transaction": {}}] * (MAX_REPLAY + 1)}, "'replay' must be a list of 1 to"),
        ({"replay": ["line"]}, "replay[0] is not an object"),
        ({"replay": [{"transaction": {}}]}, "replay[0].message_id must be a non-empty printable string"),
        ({"replay": [{"message_id": "m\x00", "transaction": {}}]}, "replay[0].message_id must be"),
        ({"replay": [{"message_id": "m", "transaction": "{}"}]}, "replay[0].transaction must be an object"),
    ],
)
def test_a_malformed_replay_request_is_refused_in_one_line(event: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match="not a replay request") as refused:
        replay_messages(event)
    assert says in str(refused.value)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12))  # fmt: skip
def test_any_json_is_messages_or_one_clear_error(event: Any) -> None:
    try:
        messages = replay_messages({"replay": event})
    except ValueError as exc:
        assert str(exc).startswith("not a replay request")
    else:
        assert len(messages) == len(event)
