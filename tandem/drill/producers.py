"""Producers that behave like real clients of the public name (DESIGN §4, "two clocks of failover").

K threads share the workload. Each resolves the failover record as a resolver would - Route53's
``TestDNSAnswer``, the answer cached for the record's TTL (on the twin's clock) - and POSTs the body to that
ingress. A failure (refused connection, 5xx, timeout) is retried with exponential backoff and jitter
(tenacity), re-resolving the name first: that is how producers follow DNS to the DR ingress while the primary
is down. A message is *accepted* when a 200 came back; the drill's audit then holds the system to committing
every accepted message exactly once. A producer that cannot deliver a body before its deadline gives it up
and says so (``gave_up``): never accepted, so never owed.

**A retry is the same transaction.** It resends the same ``transaction_id`` with the same accounts, amount
and currency - those say *what* moves, and changing one would be another transfer (the ledger calls that a
conflict). It may re-stamp ``created_at`` (``restamp_share`` of the retries do): that field says when the
request was made, and real clients stamp each attempt. A retry can duplicate a message the system already
holds - the answer to the first attempt may have been lost on the way back (``lost_answer_share`` of first
attempts lose their 200 here, as a flaky network would) - which the exactly-once path must absorb.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from tandem_core.models import InvalidMessage, parse_transaction


class NotAccepted(Exception):
    """One attempt that did not get a 200 (the producer retries)."""


#: what one attempt may fail with and still be retried: the name not resolving, the ingress not answering
RETRYABLE = (NotAccepted, OSError, BotoCoreError, ClientError)


@dataclass
class Resolver:
    """The public name, as a caching resolver sees it: one ``TestDNSAnswer`` per TTL (real seconds).

    ``hosts`` maps what the record answers (each region's ingress domain) to where it listens - the
    twin's /etc/hosts: on one machine every ingress is a loopback port.
    """

    route53: Any
    zone_id: str
    record: str
    hosts: Mapping[str, str]  # ingress domain -> base URL
    ttl_seconds: float
    clock: Callable[[], float] = time.monotonic
    _cached: tuple[float, str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    lookups: int = 0
    answers: list[tuple[float, str]] = field(default_factory=list)  # (wall epoch, URL) each time the answer changed

    def resolve(self, *, fresh: bool = False) -> str:
        """The ingress URL the name points at now (from the cache unless it expired or ``fresh``)."""
        with self._lock:
            now = self.clock()
            if not fresh and self._cached is not None and now - self._cached[0] < self.ttl_seconds:
                return self._cached[1]
            answer = self.route53.test_dns_answer(HostedZoneId=self.zone_id, RecordName=self.record, RecordType="CNAME")
            self.lookups += 1
            (domain,) = answer["RecordData"][:1] or ("",)
            url = self.hosts.get(str(domain).rstrip("."))
            if url is None:
                raise NotAccepted(f"{self.record} answers {domain!r}, which is no known ingress")
            if not self.answers or self.answers[-1][1] != url:
                self.answers.append((time.time(), url))
            self._cached = (now, url)
            return url


@dataclass(frozen=True)
class Accepted:
    body: str
    at: float  # monotonic, when the 200 came back
    url: str  # the ingress that accepted it
    attempts: int
    wall_at: float = 0.0  # the same moment in epoch seconds (what the functions' records are stamped with)


@dataclass
class Sent:
    accepted: list[Accepted] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)  # bodies never accepted (deadline reached, or an error)
    failed_attempts: int = 0
    errors: list[str] = field(default_factory=list)  # what made a producer give a body up other than time
    lost_answers: int = 0  # 200s the producer never saw (it retried: the system may hold the message twice)
    restamped: int = 0  # retries sent with a new created_at

    def accepted_by(self, url: str) -> int:
        return sum(1 for a in self.accepted if a.url == url)


class Producers:
    """``count`` producer threads over one resolver; :meth:`send` returns once every body is accepted or given up."""

    def __init__(
        self, resolver: Resolver, count: int, *, timeout: float = 5.0, max_backoff: float = 1.0,
        on_accept: Callable[[int], None] | None = None, rate: float | None = None,
        restamp_share: float = 0.0, lost_answer_share: float = 0.0,
    ) -> None:  # fmt: skip
        if count < 1:
            raise ValueError(f"producers must be at least 1, not {count}")
        if not (0.0 <= restamp_share <= 1.0 and 0.0 <= lost_answer_share <= 1.0):
            raise ValueError("restamp_share and lost_answer_share are fractions, 0 to 1")
        self._shares = {"restamp": _Share(restamp_share), "lose": _Share(lost_answer_share)}
        self._resolver = resolver
        self._count = count
        self._timeout = timeout
        self._max_backoff = max_backoff
        self._on_accept = on_accept
        self._rate = rate  # bodies per real second, all producers together (None: as fast as they go)
        self._start = 0.0
        self._lock = threading.Lock()

    def send(self, bodies: list[str], deadline: float, pace: Callable[[int], None] | None = None) -> Sent:
        """Deliver ``bodies`` (each to whatever the name points at when it is sent). ``pace(n)`` runs before
        the n-th body is taken (the scenario's hook: kill a region at a fraction of the workload)."""
        work: queue.Queue[tuple[int, str]] = queue.Queue()
        for item in enumerate(bodies):
            work.put(item)
        sent = Sent()
        self._start = time.monotonic()
        threads = [
            threading.Thread(target=self._produce, args=(work, sent, deadline, pace), name=f"producer-{i}", daemon=True)
            for i in range(self._count)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sent

    def _produce(
        self, work: queue.Queue[tuple[int, str]], sent: Sent, deadline: float, pace: Callable[[int], None] | None
    ) -> None:
        while True:
            try:
                n, body = work.get_nowait()
            except queue.Empty:
                return
            if self._rate:  # clients send at a rate, not all at once: the n-th body leaves at n / rate
                time.sleep(max(0.0, self._start + n / self._rate - time.monotonic()))
            try:
                if pace is not None:
                    pace(n)
                accepted = self._deliver(body, deadline, sent)
            except Exception as exc:  # a producer never dies silently: the body is given up, with why
                with self._lock:
                    sent.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                accepted = None
            with self._lock:
                if accepted is None:
                    sent.gave_up.append(body)
                else:
                    sent.accepted.append(accepted)
                    if self._on_accept is not None:
                        self._on_accept(len(sent.accepted))

    def _deliver(self, body: str, deadline: float, sent: Sent) -> Accepted | None:
        retrying = Retrying(
            stop=stop_after_delay(max(0.0, deadline - time.monotonic())),
            wait=wait_exponential_jitter(multiplier=0.05, max=self._max_backoff, jitter=0.25),
            retry=retry_if_exception_type(RETRYABLE),
        )
        try:
            for attempt in retrying:
                with attempt:
                    number = attempt.retry_state.attempt_number
                    if number > 1:
                        body = self._retried(body, sent)
                    try:
                        url = self._resolver.resolve(fresh=number > 1)  # after a failure: ask the name again
                        self._post(url, body)
                        if number == 1 and _transfer(body) and self._next("lose"):
                            with self._lock:
                                sent.lost_answers += 1
                            raise NotAccepted(f"{url} answered 200, but the answer was lost on the way back")
                    except RETRYABLE:
                        with self._lock:
                            sent.failed_attempts += 1
                        raise
                    return Accepted(body, time.monotonic(), url, number, time.time())
        except RetryError:
            return None
        return None

    def _next(self, which: str) -> bool:
        with self._lock:
            return self._shares[which].next()

    def _retried(self, body: str, sent: Sent) -> str:
        """The body a retry sends: the same transaction, ``created_at`` re-stamped for a share of them."""
        if not self._next("restamp"):
            return body
        try:
            message = json.loads(body)
        except ValueError:
            return body  # poison stays what it was
        if not isinstance(message, dict) or not isinstance(message.get("created_at"), str):
            return body
        message["created_at"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        with self._lock:
            sent.restamped += 1
        return json.dumps(message)

    def _post(self, url: str, body: str) -> None:
        request = urllib.request.Request(  # noqa: S310 - the resolver only hands out the ingress URLs it knows
            f"{url}/transactions", data=body.encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310 - loopback ingress
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            raise NotAccepted(f"{url} answered {exc.code}") from None
        if status != 200:
            raise NotAccepted(f"{url} answered {status}")


@dataclass
class _Share:
    """Exactly ``share`` of the cases, spread evenly and starting with the first (1/2: the 1st, 3rd, 5th...):
    a storm that is the same on every run, whatever the threads' order."""

    share: float
    seen: int = 0

    def next(self) -> bool:
        self.seen += 1
        return math.ceil(self.seen * self.share) > math.ceil((self.seen - 1) * self.share)


def _transfer(body: str) -> bool:
    """A valid transaction (poison is sent once per copy: the audit counts the DLQ against the workload's)."""
    try:
        parse_transaction(body)
    except InvalidMessage:
        return False
    return True
