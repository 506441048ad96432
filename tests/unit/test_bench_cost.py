"""The cost per million transactions is arithmetic on what the pipeline counted: each counted call moves its line."""

from __future__ import annotations

import pytest

from bench import cost

CALLS = {"dynamodb:TransactWriteItems": 1.0, "s3:PutObject": 1.0, "postgresql:statement": 1.0, "dynamodb:GetItem": 0.5}


def line(priced: cost.Cost, item: str) -> float:
    return next(x.usd_per_million for x in priced.lines if x.item == item)


def test_each_line_follows_the_calls_and_times_it_was_given() -> None:
    priced = cost.per_million(CALLS, batch_ms=20.0, processor_mb=512, intake_mb=256, transactions_per_day=1_000_000)
    # 100,000 batches of 10: status = 10 items x (2 write units + 1 replicated) at $0.625/M each
    assert line(priced, "status (global table)") == pytest.approx(100_000 * 10 * 3 * 0.625 / 1e6)
    # 100,000 invokes at $0.20/M + 100,000 x 20 ms x 0.5 GB at the arm64 GB-second price
    assert line(priced, "processor Lambda") == pytest.approx(0.02 + 1_000 * 0.0000133334)
    assert line(priced, "journal (S3)") == pytest.approx(100_000 * 2 * 0.005 / 1e3)
    assert line(priced, "fence reads") == pytest.approx(100_000 * 0.5 * 0.125 / 1e6)
    assert line(priced, "monitor's share") == pytest.approx(cost.MONITOR_USD_PER_MONTH / 30)
    assert priced.per_million == pytest.approx(sum(x.usd_per_million for x in priced.lines))


def test_a_second_journal_put_or_a_slower_batch_costs_more_and_more_traffic_spreads_the_monitor_thinner() -> None:
    base = cost.per_million(CALLS, 20.0, 512, 256, 1_000_000)
    two_puts = cost.per_million({**CALLS, "s3:PutObject": 2.0}, 20.0, 512, 256, 1_000_000)
    slower = cost.per_million(CALLS, 40.0, 512, 256, 1_000_000)
    busier = cost.per_million(CALLS, 20.0, 512, 256, 10_000_000)
    assert two_puts.per_million - base.per_million == pytest.approx(line(base, "journal (S3)"))
    assert line(slower, "processor Lambda") > line(base, "processor Lambda")
    assert line(busier, "monitor's share") == pytest.approx(line(base, "monitor's share") / 10)


def test_the_report_dates_its_prices_and_ends_with_the_total() -> None:
    out = cost.report(cost.per_million(CALLS, 20.0, 512, 256, 1_000_000))
    assert cost.PRICES_AS_OF in out[0]
    assert out[-1].strip().startswith("cost_per_million_usd: ")
