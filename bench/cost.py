"""cost_per_million_usd: what a million transactions cost in AWS, from the calls counted and the times measured.

The arithmetic takes the processor's service calls per batch as :mod:`bench.pipeline` counted them and its
measured batch time (through the emulator on this machine's two cores: an upper bound of what Lambda bills),
the memory the template configures, and the write path around it: the API request, the intake function and
its write to the global table (``DurableIngress``), the queue's send, the Lambda poller's receive and delete,
and what the global table and S3 replication copy into the DR region. The replication monitor costs the same
whatever the traffic; its share is its monthly cost spread over a stated load. Aurora is left out: it is paid
by the hour whatever the traffic (the README's idle floor), and its I/O depends on the instance's cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.workload import BATCH_SIZE

PRICES_AS_OF = "2026-12, us-east-1 list prices, on demand, no free tier"
PRICES = {
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second_arm64": 0.0000133334,
    "http_api_request": 1.00 / 1e6,
    "dynamodb_write_unit": 0.625 / 1e6,
    "dynamodb_replicated_write_unit": 0.625 / 1e6,
    "dynamodb_read_unit": 0.125 / 1e6,
    "s3_put": 0.005 / 1e3,
    "sqs_request": 0.40 / 1e6,
}
#: the replication monitor in both regions, per month at rate(1 minute): the README's itemized table
MONITOR_USD_PER_MONTH = 25.0
#: the intake function's time per request (DurableIngress: one write to the other region's replica), as the
#: README's intake section states it; not measured by this bench (the local region has no peer to write to)
INTAKE_MS = 25.0
DAYS_PER_MONTH = 30


@dataclass(frozen=True)
class CostLine:
    item: str
    arithmetic: str
    usd_per_million: float


@dataclass(frozen=True)
class Cost:
    lines: list[CostLine]
    transactions_per_day: int

    @property
    def per_million(self) -> float:
        return sum(line.usd_per_million for line in self.lines)


def per_million(
    calls_per_batch: dict[str, float],
    batch_ms: float,
    processor_mb: int,
    intake_mb: int,
    transactions_per_day: int,
) -> Cost:
    """``calls_per_batch``: the pipeline's mean count per batch of each ``service:Operation``."""
    m = 1e6
    batches = m / BATCH_SIZE
    transact = calls_per_batch.get("dynamodb:TransactWriteItems", 0.0)
    puts = calls_per_batch.get("s3:PutObject", 0.0)
    reads = sum(v for k, v in calls_per_batch.items() if k.startswith("dynamodb:") and "Get" in k)
    gb_s = batches * batch_ms / 1000 * processor_mb / 1024
    intake_gb_s = m * INTAKE_MS / 1000 * intake_mb / 1024
    monthly = transactions_per_day * DAYS_PER_MONTH
    p = PRICES
    write, replicated = p["dynamodb_write_unit"], p["dynamodb_replicated_write_unit"]
    invoke, gb_second = p["lambda_request"], p["lambda_gb_second_arm64"]
    lines = [
        CostLine("HTTP API", f"{m:,.0f} POST /transactions", m * p["http_api_request"]),
        CostLine(
            "intake Lambda",
            f"{m:,.0f} requests + {intake_gb_s:,.0f} GB-s ({INTAKE_MS:g} ms at {intake_mb} MB)",
            m * invoke + intake_gb_s * gb_second,
        ),
        CostLine("intake write (global table)", "1 write unit + 1 replicated", m * (write + replicated)),
        CostLine(
            "SQS",
            f"send 1 per transaction + receive and delete per batch of {BATCH_SIZE}",
            (m + 2 * batches) * p["sqs_request"],
        ),
        CostLine(
            "processor Lambda",
            f"{batches:,.0f} invokes + {gb_s:,.0f} GB-s ({batch_ms:.1f} ms at {processor_mb} MB)",
            batches * invoke + gb_s * gb_second,
        ),
        CostLine(
            "status (global table)",
            f"{transact:g} TransactWriteItems of {BATCH_SIZE} items a batch: 2 write units an item + 1 replicated",
            batches * transact * BATCH_SIZE * (2 * write + replicated),
        ),
        CostLine(
            "fence reads",
            f"{reads:.2f} GetItem a batch (the control record, cached)",
            batches * reads * p["dynamodb_read_unit"],
        ),
        CostLine("journal (S3)", f"{puts:g} PUT a batch + its replica's PUT in DR", batches * puts * 2 * p["s3_put"]),
        CostLine(
            "monitor's share",
            f"${MONITOR_USD_PER_MONTH:g}/month over {monthly:,} transactions/month",
            MONITOR_USD_PER_MONTH / monthly * m,
        ),
    ]
    return Cost(lines, transactions_per_day)


def report(cost: Cost) -> list[str]:
    out = [f"  prices  : {PRICES_AS_OF}; Aurora (hourly, traffic-independent) not included"]
    out += [f"    {c.item:<28} ${c.usd_per_million:8.4f}   {c.arithmetic}" for c in cost.lines]
    out.append(f"  cost_per_million_usd: {cost.per_million:.2f}  (at {cost.transactions_per_day:,} transactions a day)")
    return out
