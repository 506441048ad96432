"""ledger_sql_vs_pgbench: the ledger's production statement against pgbench on the same PostgreSQL, same run.

What is ours on the write path is the statement: ``Ledger.apply`` (``tandem_core.ledger``) running the
exactly-once insert and balance upsert (``ledger_apply()``, migration 0003) for a batch of 10 transfers in one
autocommit round trip. Each writer is its own process with its own connection, as each concurrent Lambda
environment is: TLS (``require``, the functions' mode), logged in as ``tandem_processor`` (the processor's role; on this
throwaway server with a password instead of an IAM token), the schema checked on connect as in production. The transfers
are built before the clock starts: parsing is the processor's CPU, not the database's.

- one writer, transfers spread over 100 accounts, against ``pgbench -c 1`` (TPC-B-like, scale 1): one commit
  per ten transfers is why we batch, target >= 3.0;
- 1, 2, 4, 8 writers of skewed batches (payers spread over 10,000 customers, payees Zipf-like over 100
  merchants: the top one takes about a fifth of all transfers, so nearly every batch locks its balance row)
  against ``pgbench -c N`` (whose single branch row every transaction updates), target >= 1.5 at 8 with no
  batch failed. A deadlock or a serialization failure would be retried once inside ``Ledger.apply``; the
  retries (connections discarded) and the server's own deadlock count are reported, and a batch that still
  failed counts as failed.

The server is fsync on, synchronous_commit on, TLS on (``tandem.localpg``). After the runs the ledger is
audited: as many rows as batches committed times ten, every currency's balances summing to zero.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any

from pg8000.native import literal

from bench import pgbench
from bench.pgbench import PgbenchTps
from bench.spawn import BenchError
from bench.stats import percentile
from bench.workload import BATCH_SIZE, Transfers
from tandem.localpg import LocalPostgres, running_postgres

TARGET_ONE = 3.0
TARGET_C8 = 1.5
CURVE = (1, 2, 4, 8)
CUSTOMERS = 10_000
MERCHANTS = 100
ZIPF_S = 1.1
PROCESSOR = "tandem_processor"
WARMUP = 5  # batches each writer applies before the clock starts
WARM_SECONDS = 3  # each side's unmeasured run on the fresh server before the first measured one


@dataclass(frozen=True)
class WriterFigures:
    """What one writer process did in the measured window."""

    batches: int
    failed: int
    retries: int
    latencies_ms: list[float]


@dataclass(frozen=True)
class SqlThroughput:
    writers: int
    skewed: bool
    seconds: float
    figures: list[WriterFigures]
    deadlocks: int  # the server's count (pg_stat_database) over the run

    @property
    def batches(self) -> int:
        return sum(f.batches for f in self.figures)

    @property
    def failed(self) -> int:
        return sum(f.failed for f in self.figures)

    @property
    def retries(self) -> int:
        return sum(f.retries for f in self.figures)

    @property
    def tps(self) -> float:
        return self.batches * BATCH_SIZE / self.seconds

    @property
    def p95_ms(self) -> float:
        return percentile([x for f in self.figures for x in f.latencies_ms], 95)


class SkewedTransfers(Transfers):
    """Customers pay merchants: payers uniform over CUSTOMERS, payees Zipf-like (s=ZIPF_S) over MERCHANTS."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed, accounts=2)
        self._customers = [f"cus-{i:05d}" for i in range(1, CUSTOMERS + 1)]
        self._merchants = [f"mer-{i:03d}" for i in range(1, MERCHANTS + 1)]
        self._cum = list(itertools.accumulate(1 / rank**ZIPF_S for rank in range(1, MERCHANTS + 1)))

    def transfer(self) -> dict[str, str]:
        body = super().transfer()
        rng = self._rng
        body["account_id"] = rng.choice(self._customers)
        body["counterparty_id"] = rng.choices(self._merchants, cum_weights=self._cum)[0]
        return body


def hottest_share() -> float:
    """The top merchant's share of all transfers under the skew."""
    weights = [1 / rank**ZIPF_S for rank in range(1, MERCHANTS + 1)]
    return float(weights[0] / sum(weights))


# ---------------------------------------------------------------------------------------------- the writers
def _writer(
    server: dict[str, Any], seed: int, skewed: bool, seconds: float, rate: float, barrier: Barrier, out: Any
) -> None:
    """One writer process: connect, warm up, wait for the others, apply batches until the window closes."""
    from tandem_core.database import LedgerConnector
    from tandem_core.ledger import Ledger, Outcome
    from tandem_core.models import Entry, parse_transaction
    from tandem_core.settings import LedgerDbSettings

    class Counting(LedgerConnector):
        """The production connector, counting the connections ``Ledger.apply`` discards: its retries."""

        discarded = 0

        def discard(self) -> None:
            self.discarded += 1
            super().discard()

    settings = LedgerDbSettings.model_validate(
        {"LEDGER_DB_HOST": "127.0.0.1", "LEDGER_DB_PORT": server["port"], "LEDGER_DB_NAME": server["database"],
         "LEDGER_DB_AUTH": "secret", "LEDGER_DB_SECRET_ARN": "bench", "LEDGER_DB_SSLMODE": "require"}
    )  # fmt: skip

    class Password:
        def credentials(self, *, refresh: bool = False) -> tuple[str, str]:  # noqa: ARG002 - never rotates here
            return PROCESSOR, server["password"]

    connector = Counting(settings, Password())
    ledger = Ledger(connector)
    source = SkewedTransfers(seed) if skewed else Transfers(seed, accounts=100)
    ids = itertools.count()

    def batches(n: int) -> list[list[Entry]]:
        return [
            [
                Entry(parse_transaction(json.dumps(source.transfer())), f"m-{seed}-{next(ids)}")
                for _ in range(BATCH_SIZE)
            ]
            for _ in range(n)
        ]

    def apply(batch: list[Entry]) -> bool:
        applied = ledger.apply(batch)
        return all(o is Outcome.COMMITTED for o in applied.outcomes.values())

    for batch in batches(WARMUP):  # connection, TLS, schema check, the statement's plan
        apply(batch)
    ready = batches(int(seconds * rate) + 200)  # enough for the window at this machine's rates
    connector.discarded = 0
    barrier.wait()
    latencies: list[float] = []
    failed = 0
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        if not ready:
            ready = batches(100)  # ran out: the time to build them counts against this writer
            continue
        try:
            ok = apply(ready.pop())
        except Exception:  # a batch that failed after Ledger.apply's own retry: what we count
            ok = False
        if ok:
            latencies.append((time.monotonic() - now) * 1000)
        else:
            failed += 1
    out.put(WriterFigures(len(latencies), failed, connector.discarded, latencies))


def ledger_sql_tps(pg: LocalPostgres, writers: int, seconds: float, *, skewed: bool, seed: int) -> SqlThroughput:
    """``writers`` processes applying batches for ``seconds`` (all starting together)."""
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, like separate Lambda environments
    barrier, out = ctx.Barrier(writers + 1), ctx.Queue()
    server = {"port": pg.port, "database": pg.database, "user": pg.user, "password": pg.password}
    procs = [
        ctx.Process(
            target=_writer, args=(server, seed * 100 + i, skewed, seconds, 1000 / writers, barrier, out), daemon=True
        )
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=120)
        deadlocks0 = _deadlocks(pg)
        figures = [out.get(timeout=seconds + 120) for _ in procs]
    except Exception as exc:
        raise BenchError(f"{writers} ledger writer(s) did not finish: {type(exc).__name__}: {exc}") from exc
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return SqlThroughput(writers, skewed, seconds, figures, _deadlocks(pg) - deadlocks0)


def _deadlocks(pg: LocalPostgres) -> int:
    conn = pg.connect()
    try:
        rows = conn.run("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()") or [[0]]
        return int(rows[0][0])
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- the audit
def audit(pg: LocalPostgres, committed_batches: int) -> list[str]:
    """The ledger holds exactly the committed transfers and every currency's balances sum to zero."""
    conn = pg.connect()
    try:
        rows = int(conn.run("SELECT count(*) FROM ledger_transaction")[0][0])
        sums = conn.run("SELECT currency, sum(balance_minor) FROM account_balance GROUP BY currency") or []
    finally:
        conn.close()
    problems = []
    if rows != committed_batches * BATCH_SIZE:
        problems.append(f"the ledger holds {rows} rows, the writers committed {committed_batches * BATCH_SIZE}")
    problems += [f"{cur} balances sum to {total}, not 0" for cur, total in sums if int(total) != 0]
    return problems


# ---------------------------------------------------------------------------------------------- the bench
@dataclass(frozen=True)
class SqlBench:
    one: SqlThroughput
    pgbench_one: PgbenchTps
    curve: list[tuple[SqlThroughput, PgbenchTps]]
    problems: list[str]

    @property
    def ratio_one(self) -> float:
        return self.one.tps / self.pgbench_one.tps

    @property
    def c8(self) -> tuple[SqlThroughput, PgbenchTps]:
        return self.curve[-1]

    @property
    def ratio_c8(self) -> float:
        sql, pgb = self.c8
        return sql.tps / pgb.tps

    @property
    def batch_ms(self) -> float:
        """The one-writer batch's median round trip: the ledger's share of a Lambda batch."""
        return percentile(self.one.figures[0].latencies_ms, 50)


@contextmanager
def ledger_server() -> Iterator[LocalPostgres]:
    """A fresh server of this run holding the ledger, migrated as a deploy does; the processor's role logs in
    with the server's password (the IAM token's stand-in on this throwaway server)."""
    from tandem_core.schema import migrate

    with running_postgres() as pg:
        conn = pg.connect()
        try:
            migrate(conn)
            conn.run(f"ALTER ROLE {PROCESSOR} PASSWORD {literal(pg.password)}")
        finally:
            conn.close()
        yield pg


def measure(seconds: int, seed: int = 7) -> SqlBench:
    """Both sides on one fresh server of this run: the ledger's database and pgbench's own."""
    with ledger_server() as pg:
        pgbench.init(pg)
        # a fresh cluster creates its WAL segments and caches as it goes: whichever side ran first paid for it
        warm = ledger_sql_tps(pg, 1, WARM_SECONDS, skewed=False, seed=seed + 1000)
        pgbench.tps(pg, 1, WARM_SECONDS)
        one = ledger_sql_tps(pg, 1, seconds, skewed=False, seed=seed)
        pgbench_one = pgbench.tps(pg, 1, seconds)
        curve = [
            (ledger_sql_tps(pg, n, seconds, skewed=True, seed=seed + n), pgbench.tps(pg, n, seconds)) for n in CURVE
        ]
        committed = warm.batches + one.batches + sum(sql.batches for sql, _ in curve) + WARMUP * (2 + sum(CURVE))
        return SqlBench(one, pgbench_one, curve, audit(pg, committed))


def report(bench: SqlBench) -> list[str]:
    from bench.stats import verdict

    one, pgb = bench.one, bench.pgbench_one
    lines = [
        f"  ledger  : {one.tps:8.1f} transfers/s  (1 writer, batches of {BATCH_SIZE}, p50"
        f" {bench.batch_ms:.2f} ms, p95 {one.p95_ms:.2f} ms a batch; failed {one.failed}, retries {one.retries})",
        f"  pgbench : {pgb.tps:8.1f} tps  (TPC-B-like, scale 1, -c 1, latency avg {pgb.latency_ms:.2f} ms)",
        f"  ledger_sql_vs_pgbench        : {verdict(bench.ratio_one, TARGET_ONE, higher_is_better=True)}",
        f"  concurrency curve (skewed: the top merchant takes {hottest_share():.0%} of the transfers):",
        "    writers   ledger transfers/s   x of 1 writer   p95 batch ms   pgbench tps   ratio   failed  retries"
        "  deadlocks",
    ]
    base = bench.curve[0][0].tps
    for sql, p in bench.curve:
        lines.append(
            f"    {sql.writers:>7}   {sql.tps:>18.1f}   {sql.tps / base:>13.2f}   {sql.p95_ms:>12.2f}   {p.tps:>11.1f}"
            f"   {sql.tps / p.tps:>5.2f}   {sql.failed:>6}  {sql.retries:>7}  {sql.deadlocks:>9}"
        )
    sql8 = bench.c8[0]
    lines.append(
        f"  ledger_sql_vs_pgbench_c8_skew: {verdict(bench.ratio_c8, TARGET_C8, higher_is_better=True)};"
        f" failed batches {sql8.failed}, retries {sql8.retries}, deadlocks {sql8.deadlocks}"
    )
    lines += [f"  AUDIT FAILED: {p}" for p in bench.problems] or ["  audit   : rows = committed, balances sum to 0"]
    return lines
