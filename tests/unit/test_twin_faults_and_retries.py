"""The twin's fault injection (a kill at a chosen API call) and Lambda's retries of asynchronous events."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from tandem.twin.faults import Fault, FaultingApp, Faults
from tandem.twin.lambdas import AsyncInvocations
from tandem.twin.stacks import parameter_override
from tests.conftest import eventually


def replies(*oks: bool) -> tuple[list[dict[str, Any]], Callable[[str, str, dict[str, Any]], dict[str, Any]]]:
    """An invoker answering ``oks`` in turn (then ok), and the events it saw."""
    seen: list[dict[str, Any]] = []
    answers = list(oks)

    def invoke(_region: str, _function: str, event: dict[str, Any]) -> dict[str, Any]:
        seen.append(event)
        ok = answers.pop(0) if answers else True
        return {"ok": True} if ok else {"ok": False, "errorType": "Runtime.ExitError"}

    return seen, invoke


def test_a_failed_event_is_retried_as_often_as_its_config_says_then_given_up() -> None:
    retries = {("r", "twice"): 2, ("r", "once"): 1}
    for function, runs in (("twice", 3), ("once", 2)):
        seen, invoke = replies(False, False, False)  # every run fails
        invocations = AsyncInvocations(invoke, lambda r, f: retries[(r, f)], retry_delays=(0.01, 0.02))
        try:
            invocations.submit("r", function, {"n": 1})
            assert eventually(lambda: len(seen) == runs, timeout=5)  # noqa: B023 - used within the iteration
            time.sleep(0.1)
            assert (len(seen), invocations.retried) == (runs, runs - 1)  # then the event is dropped
            assert {e["n"] for e in seen} == {1}  # the same event each time
        finally:
            invocations.stop()


def test_a_retry_that_succeeds_is_the_last_and_stopping_cancels_pending_retries() -> None:
    seen, invoke = replies(False)
    invocations = AsyncInvocations(invoke, lambda _r, _f: 2, retry_delays=(0.01, 0.01))
    invocations.submit("r", "f", {})
    assert eventually(lambda: len(seen) == 2, timeout=5)
    time.sleep(0.1)
    assert len(seen) == 2
    invocations.stop()

    seen, invoke = replies(False)
    later = AsyncInvocations(invoke, lambda _r, _f: 2, retry_delays=(0.3, 0.3))
    later.submit("r", "f", {})
    assert eventually(lambda: len(seen) == 1, timeout=5)
    later.stop()  # the twin goes down while a retry waits
    time.sleep(0.5)
    assert (len(seen), later.retried) == (1, 0)


def wsgi(app: Any, target: str, body: bytes) -> bytes:
    environ = {"HTTP_X_AMZ_TARGET": target, "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    result: Iterable[bytes] = app(environ, lambda *_: None)
    return b"".join(result)


def test_a_fault_fires_once_after_the_api_applied_the_matching_request() -> None:
    applied: list[bytes] = []
    killed: list[int] = []

    def emulator(environ: dict[str, Any], _start: Any) -> list[bytes]:
        applied.append(environ["wsgi.input"].read())  # the emulator still reads the whole body
        return [b"reply"]

    faults = Faults()
    app = FaultingApp(emulator, faults)
    fault = Fault("DynamoDB_20120810.UpdateItem", '"notify"', lambda: killed.append(len(applied)))
    faults.add(fault)
    assert wsgi(app, "DynamoDB_20120810.GetItem", b'{"notify"}') == b"reply"  # another call: untouched
    assert wsgi(app, "DynamoDB_20120810.UpdateItem", b'{"step": "shift_dns"}') == b"reply"  # another body
    assert (killed, faults.pending) == ([], 1)
    assert wsgi(app, "DynamoDB_20120810.UpdateItem", b'{"step": "notify"}') == b"reply"
    assert killed == [3]  # after the emulator applied it
    assert (fault.fired.is_set(), faults.pending) == (True, 0)
    wsgi(app, "DynamoDB_20120810.UpdateItem", b'{"step": "notify"}')
    assert killed == [3]  # once
    assert applied[-1] == b'{"step": "notify"}'


def test_two_requests_racing_for_one_fault_fire_it_once() -> None:
    killed: list[int] = []
    faults = Faults()
    faults.add(Fault("T", "x", lambda: killed.append(1)))
    app = FaultingApp(lambda _e, _s: [b""], faults)
    threads = [threading.Thread(target=wsgi, args=(app, "T", b"x")) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert killed == [1]


@pytest.mark.parametrize("text", ["", "NoEquals", "=5", "bad key=1", "9x=1"])
def test_a_parameter_override_that_is_not_key_value_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        parameter_override(text)


def test_a_parameter_override_keeps_everything_after_the_first_equals() -> None:
    assert parameter_override("FailoverMinDelaySeconds=60") == ("FailoverMinDelaySeconds", "60")
    assert parameter_override("PeerHealthUrl=http://x/health?a=b") == ("PeerHealthUrl", "http://x/health?a=b")
    assert parameter_override("Empty=") == ("Empty", "")
