"""How the drill's producers retry: the same transaction, ``created_at`` re-stamped for exactly a share of the
retries, answers lost for exactly a share of first attempts - the same storm on every run."""

from __future__ import annotations

import json

from tandem.drill.producers import Producers, Sent, _Share
from tandem_core.models import parse_transaction
from tests.conftest import transfer


def test_a_share_is_exact_and_starts_with_the_first_case() -> None:
    half, fifth, none, every = _Share(0.5), _Share(0.2), _Share(0.0), _Share(1.0)
    assert [half.next() for _ in range(6)] == [True, False, True, False, True, False]
    assert [fifth.next() for _ in range(10)].count(True) == 2
    assert not any(none.next() for _ in range(10))
    assert all(every.next() for _ in range(10))


def test_a_retry_resends_the_same_transfer_and_only_re_stamps_created_at() -> None:
    producers = Producers(resolver=None, count=1, restamp_share=0.5)  # type: ignore[arg-type]
    body = json.dumps(transfer("acc-r1", "acc-r2", amount="3.10"))
    sent = Sent()
    first, second = producers._retried(body, sent), producers._retried(body, sent)
    assert second == body  # every other retry goes unchanged
    original, retried = parse_transaction(body), parse_transaction(first)
    assert retried.created_at != original.created_at
    assert retried.identity == original.identity  # the same transfer: a duplicate for the ledger, never a conflict
    assert sent.restamped == 1
    assert producers._retried("not json", sent) == "not json"  # poison stays what it was
