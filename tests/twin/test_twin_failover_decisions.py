"""What must NOT fail over, and what must fail over exactly once, on a twin of its own (x10, automatic on).

- A blip shorter than the detection window: no execution, and what producers sent to the DR ingress while
  DNS pointed there is forwarded to the primary and committed once.
- An alarm event while the primary still answers moves nothing (``peer_answers``: the blip is over, or the
  fault was DR's); fifty operator failovers at once while the primary answers and DR is caught up: one
  execution, and it is a planned switchover - RPO 0, nothing lost of what was sent before, during and after.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tandem.twin.control import call
from tandem_core.readiness import read_readiness
from tandem_core.status import StatusStore
from tests.conftest import eventually, load_event, transfer
from tests.twin.conftest import aws
from tests.twin.test_twin_failover import DR, PRIMARY, handler, processing, writer_region

TWIN_SCALE = 10.0
AUTOMATIC_FAILOVER = True


def post(twin: dict[str, Any], region: str, body: dict[str, Any]) -> int:
    """A producer's POST /transactions to a region's ingress (200: the message is in that region's queue)."""
    request = urllib.request.Request(
        f"{twin['regions'][region]['ingress']}/transactions", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def committed_in(twin: dict[str, Any], bodies: list[dict[str, Any]]) -> list[str] | None:
    """The region that committed each transaction (status items, read in DR's replica), once all are."""
    statuses = StatusStore(aws(twin, DR, "dynamodb"), twin["regions"][DR]["resources"]["ledger_table"])
    found = [statuses.get(b["transaction_id"]) for b in bodies]
    return None if None in found else [str(f["region"]["S"]) for f in found if f is not None]


def queue_empty(twin: dict[str, Any], region: str) -> bool:
    queue = twin["regions"][region]["resources"]["queue_url"]
    attributes = aws(twin, region, "sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    return bool(attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0")


def ready(twin: dict[str, Any]) -> bool:
    table = twin["regions"][DR]["resources"]["ledger_table"]
    return (read_readiness(aws(twin, DR, "dynamodb"), table, DR) or {}).get("verdict") == "ready"


def test_a_blip_shorter_than_the_detection_window_fails_nothing_over_and_loses_nothing(
    twin: dict[str, Any], twin_dir: Path
) -> None:
    assert eventually(lambda: ready(twin), timeout=60)
    sent = [transfer("acc-blip-1", "acc-blip-2", amount=f"{i + 1}.00") for i in range(6)]
    call(twin_dir, "POST", f"/outage/{PRIMARY}")
    struck = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as producer:  # producers that re-resolved to DR, while it lasts
        posted = producer.submit(lambda: [post(twin, DR, body) for body in sent])
        try:  # 2 real s = 20 emulated s from the strike, however long the posts take on a loaded machine:
            time.sleep(max(0.0, struck + 2.0 - time.monotonic()))  # the failover alarm needs 40 s of silence
        finally:
            call(twin_dir, "POST", f"/restore/{PRIMARY}")
        assert posted.result() == [200] * 6
    regions = eventually(lambda: committed_in(twin, sent), timeout=60, interval=1.0)
    assert regions == [PRIMARY] * 6  # forwarded by DR's monitor once the primary answered, committed there
    assert eventually(lambda: queue_empty(twin, DR), timeout=10)
    time.sleep(8.0)  # 80 emulated s more: the alarms had every chance to fire late
    status = handler(twin, DR, {"action": "status"})
    assert (status["executions"], status["control"]["epoch"]) == ([], 0)
    assert (writer_region(twin), processing(twin, PRIMARY), processing(twin, DR)) == (PRIMARY, "Enabled", "Disabled")
    history = aws(twin, DR, "cloudwatch").describe_alarm_history(
        AlarmName=f"{twin['regions'][DR]['resources']['stack']}-peer-region-impaired", HistoryItemType="StateUpdate"
    )["AlarmHistoryItems"]
    assert not [h for h in history if "to ALARM" in h["HistorySummary"]]


def test_fifty_failovers_at_once_while_the_primary_answers_run_one_planned_switchover_that_loses_nothing(
    twin: dict[str, Any],
) -> None:
    assert eventually(lambda: ready(twin), timeout=60)
    earlier = {e["id"] for e in handler(twin, DR, {"action": "status"})["executions"]}  # this module's twin
    before = [transfer("acc-switch-1", "acc-switch-2", amount=f"{i + 1}.00") for i in range(10)]
    assert [post(twin, PRIMARY, b) for b in before] == [200] * 10
    name = twin["regions"][DR]["functions"]["failover_handler"]["name"]
    lam = aws(twin, DR, "lambda")
    alarm = lam.invoke(FunctionName=name, Payload=json.dumps(load_event("failover_alarm.json")).encode())
    refused = json.loads(alarm["Payload"].read())  # the alarm's peer answers and commits: nothing moves
    assert (refused["outcome"], refused["reasons"]) == ("refused", ["peer_answers"]), refused
    assert writer_region(twin) == PRIMARY

    def one(_: int) -> dict[str, Any]:
        reply = lam.invoke(FunctionName=name, Payload=json.dumps({"action": "failover"}).encode())
        answer: dict[str, Any] = json.loads(reply["Payload"].read())
        assert "FunctionError" not in reply, answer  # an operator's duplicate is refused, never retried
        return answer

    during: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = pool.map(one, range(50))
        for i in range(10):  # producers keep sending to the primary while the switchover runs
            body = transfer("acc-switch-1", "acc-switch-2", amount=f"{i + 11}.00")
            if post(twin, PRIMARY, body) == 200:
                during.append(body)
        outcomes = [a["outcome"] for a in answers]
    assert outcomes.count("completed") == 1, outcomes
    assert set(outcomes) <= {"completed", "refused"}, outcomes
    status = handler(twin, DR, {"action": "status"})
    mine = [e for e in status["executions"] if e["id"] not in earlier]
    execution, alarm_refusal = mine  # the other 49 changed and recorded nothing
    assert (alarm_refusal["trigger"], alarm_refusal["outcome"]) == ("alarm", "refused")
    assert (execution["mode"], execution["outcome"], execution["rpo_estimate_seconds"]) == (
        "switchover",
        "completed",
        0,
    )
    steps = {s["name"]: s["outcome"] for s in execution["steps"]}
    assert steps["fence_peer_processing"] == "completed"  # the primary answered: fenced at once
    assert (writer_region(twin), processing(twin, DR), processing(twin, PRIMARY)) == (DR, "Enabled", "Disabled")
    after = [transfer("acc-switch-1", "acc-switch-2", amount=f"{i + 21}.00") for i in range(10)]
    assert [post(twin, DR, b) for b in after] == [200] * 10
    everything = before + during + after
    regions = eventually(lambda: committed_in(twin, everything), timeout=90, interval=1.0)
    assert regions, "not everything sent was committed"
    assert set(regions[len(before) + len(during) :]) == {DR}  # the old primary is fenced: it commits nothing new
    assert eventually(lambda: queue_empty(twin, PRIMARY) and queue_empty(twin, DR), timeout=30)
