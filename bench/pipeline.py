"""pipeline_tps: the whole processor, back to back, through the emulator - informational, no target.

The handler commits one ledger statement per batch of 10 (TLS, fsync on), journals the batch to S3 and records
its 10 status items in one DynamoDB TransactWriteItems through the moto server over HTTP. On this machine's two
cores the emulator's own CPU is most of a batch (it is printed beside the figure), so the throughput says little
about AWS; what is ours on that path is measured alone by :mod:`bench.ledger_sql`. What this bench keeps a
target for is ``service_calls_per_batch``: every service call the handler makes is counted, and the counts and
the measured batch time feed :mod:`bench.cost`. The handler runs in its own process (see :mod:`bench.child`);
this process only hosts the moto server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.spawn import BenchError, child_env, run_child
from bench.stats import percentile
from bench.workload import BATCH_SIZE
from tandem.local import LocalRegion
from tandem.localpg import LocalPostgres

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

    @property
    def emulator_cpu_share(self) -> float:
        """The moto server's share of the CPU both processes spent: what the figure says about the emulator."""
        return self.moto_cpu_s / (self.moto_cpu_s + self.cpu_s)

    @property
    def batch_ms(self) -> float:
        """The median batch's wall time, emulator included: an upper bound of the processor's billed time."""
        return percentile(self.latencies_ms, 50)


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


def report(handler: HandlerThroughput) -> list[str]:
    lat = handler.latencies_ms
    lines = [
        f"  pipeline: {handler.tps:8.1f} transactions/s  ({handler.transactions} transactions in {handler.batches}"
        f" batches of {BATCH_SIZE}, {handler.elapsed_s:.1f} s, one process; informational, no target)",
        f"            batch latency p50 {percentile(lat, 50):.1f} ms, p95 {percentile(lat, 95):.1f} ms,"
        f" max {max(lat):.1f} ms; first (cold) invoke {handler.first_ms:.0f} ms",
        f"            CPU per batch: handler process {handler.cpu_s / handler.batches * 1000:.1f} ms,"
        f" moto server {handler.moto_cpu_s / handler.batches * 1000:.1f} ms"
        f" (emulator_cpu_share {handler.emulator_cpu_share:.0%})",
    ]
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
