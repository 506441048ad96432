"""The drill's producers against the twin: they follow the public name, as clients of a real region would.

x600, automatic failover off: the primary's ingress dies, Route53's health checks move the failover record to
the DR ingress within emulated seconds, producers re-resolve and deliver there, and what DR's queue received is
forwarded to the (still active) primary once it is back - every accepted message committed exactly once.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from tandem.drill.producers import Producers, Resolver
from tandem.twin.control import call
from tests.conftest import eventually, transfer
from tests.twin.conftest import aws
from tests.twin.test_twin_failover_decisions import committed_in

PRIMARY, DR = "us-east-1", "us-west-2"
RECORD = "txn.tandem.twin.internal"


def resolver(twin: dict[str, Any]) -> Resolver:
    hosts = {info["resources"]["ingress_domain"]: info["ingress"] for info in twin["regions"].values()}
    return Resolver(aws(twin, DR, "route53"), twin["hosted_zone"], RECORD, hosts, ttl_seconds=60 / 600)


def test_producers_follow_the_name_to_the_dr_ingress_and_nothing_accepted_is_lost(
    twin: dict[str, Any], twin_dir: Any
) -> None:
    names = resolver(twin)
    assert names.resolve() == twin["regions"][PRIMARY]["ingress"]
    bodies = [json.dumps(transfer("acc-p-1", "acc-p-2", amount=f"{i + 1}.00")) for i in range(60)]
    down = threading.Event()

    def pace(n: int) -> None:  # a third of the way in, the primary region dies for 2 real s (20 emulated min)
        if n == 20 and not down.is_set():
            down.set()
            call(twin_dir, "POST", f"/outage/{PRIMARY}")
            threading.Timer(2.0, call, (twin_dir, "POST", f"/restore/{PRIMARY}")).start()
        time.sleep(0.05)

    sent = Producers(names, 4, timeout=2.0).send(bodies, deadline=time.monotonic() + 60, pace=pace)
    assert (sent.gave_up, sent.errors) == ([], [])
    assert len(sent.accepted) == 60
    assert sent.accepted_by(twin["regions"][DR]["ingress"]) > 0, "nothing went to DR while the primary was down"
    assert sent.failed_attempts > 0  # some hit the dead ingress, and retried
    assert eventually(lambda: call(twin_dir, "GET", "/status")["regions"][PRIMARY]["up"], timeout=10)
    transfers = [json.loads(b) for b in bodies]
    regions = eventually(lambda: committed_in(twin, transfers), timeout=60, interval=0.5)
    assert regions == [PRIMARY] * 60  # DR forwarded what it received; the primary committed everything once
