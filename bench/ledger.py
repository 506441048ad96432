"""ledger_vs_pgbench: the processor's throughput against pgbench's TPC-B-like tps on the same server.

Both sides are one client doing synchronous work against the same PostgreSQL (TLS, fsync on): pgbench
commits one 5-statement transaction per round trip; the handler commits one statement per batch of 10,
but also journals the batch to S3 and records its 10 status items in one DynamoDB TransactWriteItems through
the moto server over HTTP. Every service call the handler makes is counted (``service_calls_per_batch``). The
handler runs in its own process (see :mod:`bench.child`); this process only hosts the moto server.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.spawn import BenchError, child_env, run_child
from bench.stats import percentile
from bench.workload import BATCH_SIZE
from tandem.local import LocalRegion
from tandem.localpg import LocalPostgres, pg_bin

PGBENCH_DB = "pgbench"
TARGET = 1.0  # the handler should keep up with a plain one-client OLTP loop on the same database
CALLS_TARGET = 3.0  # journal, ledger, status: round trips independent of the batch's size


@dataclass(frozen=True)
class HandlerThroughput:
    batches: int
    elapsed_s: float
    latencies_ms: list[float]
    first_ms: float
    cpu_s: float  # the handler process's CPU time while measuring
    moto_cpu_s: float  # this process's CPU time meanwhile: the moto server answering S3/DynamoDB
    ledger_rows: int  # rows the measured + warm-up batches added to the ledger (checked, not assumed)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    calls: list[dict[str, int]] = field(default_factory=list)  # per measured batch: service call -> count

    @property
    def calls_per_batch(self) -> float:
        """The median batch's service calls: what a batch costs. The fence's control-record read is paid once per
        FENCE_MAX_AGE_SECONDS, not per batch; :attr:`call_breakdown` shows its share."""
        return percentile([float(sum(c.values())) for c in self.calls], 50) if self.calls else float("nan")

    @property
    def call_breakdown(self) -> dict[str, float]:
        """Each kind of call, on average per batch."""
        names = sorted({n for c in self.calls for n in c})
        return {n: sum(c.get(n, 0) for c in self.calls) / len(self.calls) for n in names}

    @property
    def transactions(self) -> int:
        return self.batches * BATCH_SIZE

    @property
    def tps(self) -> float:
        return self.transactions / self.elapsed_s


@dataclass(frozen=True)
class PgbenchTps:
    tps: float
    latency_ms: float
    transactions: int
    seconds: int


def _ledger_rows(pg: LocalPostgres) -> int:
    conn = pg.connect()
    try:
        exists = conn.run("SELECT to_regclass('ledger_transaction') IS NOT NULL")
        if not exists or not exists[0][0]:
            return 0
        rows = conn.run("SELECT count(*) FROM ledger_transaction") or [[0]]
        return int(str(rows[0][0]))
    finally:
        conn.close()


def handler_throughput(
    local: LocalRegion, *, seconds: float, warmup: float, accounts: int, breakdown: bool, workdir: Path
) -> HandlerThroughput:
    env = child_env(local.function_env("transaction_processor"))
    before = _ledger_rows(local.postgres)
    cpu0 = time.process_time()
    run = run_child(
        "throughput",
        ["1", str(seconds), str(warmup), str(accounts), "1" if breakdown else "0"],
        env,
        workdir,
        timeout=seconds + warmup + 300,
    )
    moto_cpu = time.process_time() - cpu0
    r = run.result
    latencies = [float(x) for x in r["latencies_ms"]]
    if not latencies:
        raise BenchError("the handler did not complete a single measured batch")
    added = _ledger_rows(local.postgres) - before
    expected = (len(latencies) + int(r["warmup_batches"])) * BATCH_SIZE
    if added != expected:
        raise BenchError(f"ledger gained {added} rows, expected {expected}: the handler did not commit every batch")
    return HandlerThroughput(
        batches=len(latencies),
        elapsed_s=float(r["elapsed_s"]),
        latencies_ms=latencies,
        first_ms=float(r["first_ms"]),
        cpu_s=float(r["cpu_s"]),
        moto_cpu_s=moto_cpu,
        ledger_rows=added,
        stages_ms={k: [float(x) for x in v] for k, v in dict(r["stages_ms"]).items()},
        calls=[{str(k): int(v) for k, v in dict(c).items()} for c in r["calls"]],
    )


def _pgbench(pg: LocalPostgres, *args: str) -> str:
    env = {
        **os.environ,
        "PGPASSWORD": pg.password,
        "PGSSLMODE": "require",  # the handler's LEDGER_DB_SSLMODE: both sides pay for TLS
        "PGAPPNAME": "bench-pgbench",
    }
    cmd = [pg_bin("pgbench"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, *args, PGBENCH_DB]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"pgbench {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout + proc.stderr


def pgbench_tps(local: LocalRegion, *, seconds: int) -> PgbenchTps:
    """pgbench's built-in TPC-B-like script, scale 1, one client, one thread, on the handler's server."""
    pg = local.postgres
    admin = pg.connect("postgres")
    try:
        admin.run(f"DROP DATABASE IF EXISTS {PGBENCH_DB}")
        admin.run(f"CREATE DATABASE {PGBENCH_DB}")
    finally:
        admin.close()
    _pgbench(pg, "-i", "-s", "1", "-q")
    out = _pgbench(pg, "-c", "1", "-j", "1", "-T", str(seconds))
    tps = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", out, re.MULTILINE)
    latency = re.search(r"^latency average = ([0-9.]+) ms", out, re.MULTILINE)
    done = re.search(r"^number of transactions actually processed: (\d+)", out, re.MULTILINE)
    if not tps or not latency or not done:
        raise BenchError(f"cannot read pgbench's report:\n{out[-2000:]}")
    return PgbenchTps(float(tps.group(1)), float(latency.group(1)), int(done.group(1)), seconds)


def report(handler: HandlerThroughput, pgbench: PgbenchTps) -> list[str]:
    lat = handler.latencies_ms
    lines = [
        f"  handler : {handler.tps:8.1f} transactions/s  ({handler.transactions} transactions in {handler.batches}"
        f" batches of {BATCH_SIZE}, {handler.elapsed_s:.1f} s, one process)",
        f"            batch latency p50 {percentile(lat, 50):.1f} ms, p95 {percentile(lat, 95):.1f} ms,"
        f" max {max(lat):.1f} ms; first (cold) invoke {handler.first_ms:.0f} ms",
        f"            CPU per batch: handler process {handler.cpu_s / handler.batches * 1000:.1f} ms,"
        f" moto server {handler.moto_cpu_s / handler.batches * 1000:.1f} ms",
        f"  pgbench : {pgbench.tps:8.1f} tps  (TPC-B-like, scale 1, -c 1 -j 1 -T {pgbench.seconds},"
        f" {pgbench.transactions} transactions, latency avg {pgbench.latency_ms:.2f} ms)",
    ]
    budget_ms = BATCH_SIZE / pgbench.tps * 1000
    moto_ms = handler.moto_cpu_s / handler.batches * 1000
    lines.append(
        f"  budget  : {budget_ms:.1f} ms a batch to reach {TARGET:.1f} ({BATCH_SIZE} transactions at pgbench's rate);"
        f" the moto server alone spent {moto_ms:.1f} ms of CPU per batch"
    )
    if handler.calls:
        most = max(sum(c.values()) for c in handler.calls)
        mean = ", ".join(f"{n} {v:.2f}" for n, v in handler.call_breakdown.items())
        median = handler.calls_per_batch
        lines.append(f"  calls   : {median:g} in the median batch (max {most}); per batch on average: {mean}")
    if handler.stages_ms:
        total = sum(lat) / len(lat)
        stages = {k: sum(v) / len(v) for k, v in handler.stages_ms.items()}
        inner = stages.get("processor_total", 0.0)
        parts = [(k, v) for k, v in stages.items() if k != "processor_total"]
        parts.append(("parse_and_rest_of_processor", inner - sum(v for _, v in parts)))
        parts.append(("handler_powertools_overhead", total - inner))
        lines.append(f"  per-batch breakdown (mean of {len(lat)} batches, total {total:.2f} ms):")
        lines += [f"            {k:<30} {v:7.2f} ms  {v / total:5.1%}" for k, v in parts]
    return lines
