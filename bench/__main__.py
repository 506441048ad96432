"""`make bench` / ``python -m bench``: run the benchmarks against one local region and print their ratios.

Each benchmark compares Tandem with a baseline measured in the same run on the same machine, so the
ratio means something on any host. A missed target is reported, not an error: the exit status is 0
unless a benchmark itself broke. The last lines are ``name=value``, one per benchmark, for machines.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tandem.local import LocalRegion

BENCHES = ("ledger-sql", "pipeline", "cold", "monitor", "failover", "drill", "drill-all")
NEEDS_LOCAL_REGION = {"pipeline", "cold"}  # the monitor and failover benches start twins of their own


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--seconds", type=_positive_int, default=10, help="measured seconds per throughput side")
    p.add_argument("--warmup", type=float, default=2.0, help="handler warm-up seconds before measuring")
    p.add_argument("--runs", type=_positive_int, default=7, help="fresh interpreters per cold-start kind")
    p.add_argument("--accounts", type=_positive_int, default=100, help="account pool of the generated transfers")
    p.add_argument(
        "--transactions-per-day", type=_positive_int, default=1_000_000,
        help="the load the monitor's fixed monthly cost is spread over in cost_per_million_usd",
    )  # fmt: skip
    p.add_argument(
        "--breakdown", action="store_true", help="also time the processor's stages (S3, PG, DynamoDB, Powertools)"
    )
    p.add_argument(
        "--bytecode",
        choices=("shipped", "cached", "inherit"),
        default="shipped",
        help="cold start: run the built artifact with its .pyc, bytecode writing off, as Lambda does (default;"
        " needs make build), or the dev environment through a private warmed .pyc cache, or as it is",
    )
    p.add_argument("--only", choices=BENCHES, action="append", help="run only this benchmark (repeatable)")
    return p


def _ledger_sql_vs_pgbench(
    args: argparse.Namespace, _local: LocalRegion | None, _workdir: Path
) -> tuple[Results, list[str]]:
    from bench import ledger_sql

    bench = ledger_sql.measure(seconds=args.seconds)
    sql8 = bench.c8[0]
    results = {
        "ledger_sql_vs_pgbench": bench.ratio_one,
        "ledger_sql_vs_pgbench_c8_skew": bench.ratio_c8,
        "ledger_sql_c8_failed_batches": float(sql8.failed),
    }
    if bench.problems:
        raise RuntimeError("the ledger's audit failed: " + "; ".join(bench.problems))
    return results, ledger_sql.report(bench)


def _pipeline(args: argparse.Namespace, local: LocalRegion | None, workdir: Path) -> tuple[Results, list[str]]:
    from bench import cost, pipeline
    from bench.stats import verdict

    assert local is not None
    handler = pipeline.handler_throughput(
        local, seconds=args.seconds, warmup=args.warmup, accounts=args.accounts, breakdown=args.breakdown,
        workdir=workdir,
    )  # fmt: skip
    lines = pipeline.report(handler)
    calls = handler.calls_per_batch
    lines.append(f"  service_calls_per_batch: {verdict(calls, pipeline.CALLS_TARGET, higher_is_better=False)}")
    priced = cost.per_million(
        handler.call_breakdown, handler.batch_ms, _memory(local, "transaction_processor"),
        _memory(local, "transaction_intake"), args.transactions_per_day,
    )  # fmt: skip
    lines.append("\ncost_per_million (in AWS, from the calls counted and the batch time measured above)")
    lines += cost.report(priced)
    return {
        "pipeline_tps": handler.tps,
        "emulator_cpu_share": handler.emulator_cpu_share,
        "service_calls_per_batch": calls,
        "cost_per_million_usd": priced.per_million,
    }, lines


def _memory(local: LocalRegion, function: str) -> int:
    """The function's MemorySize, as Lambda reports it in the environment the template gives it."""
    return int(local.function_env(function)["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])


def _cold_start_vs_boto3(
    args: argparse.Namespace, local: LocalRegion | None, workdir: Path
) -> tuple[Results, list[str]]:
    from bench import coldstart
    from bench.stats import verdict

    assert local is not None
    measured = coldstart.measure(local, runs=args.runs, bytecode=args.bytecode, workdir=workdir)
    lines = coldstart.report(measured)
    lines.append(f"  ratio     : {verdict(measured.ratio, coldstart.TARGET, higher_is_better=False)}")
    lines.append(coldstart.snapstart_report(measured))
    return {
        "cold_start_vs_boto3": measured.ratio,
        "snapstart_restore_vs_cold": measured.restore_ms / measured.cold_ms,
    }, lines


def _monitor_cost(args: argparse.Namespace, _local: LocalRegion | None, _workdir: Path) -> tuple[Results, list[str]]:
    from bench import monitor
    from bench.stats import median

    cost = monitor.measure(runs=args.runs)
    results = {
        "monitor_vs_its_calls": cost.ratio,
        "monitor_run_seconds": median(cost.pass_seconds),
        "monitor_calls_per_run": float(cost.run_calls),
    }
    return results, monitor.report(cost)


def _failover_overhead(
    _args: argparse.Namespace, _local: LocalRegion | None, _workdir: Path
) -> tuple[Results, list[str]]:
    from bench import failover

    return failover.report(failover.measure(samples=3))


def _drill_wall_time(
    _args: argparse.Namespace, _local: LocalRegion | None, _workdir: Path
) -> tuple[Results, list[str]]:
    from bench import drill

    return drill.report(drill.measure())


def _drill_all_wall_time(
    _args: argparse.Namespace, _local: LocalRegion | None, _workdir: Path
) -> tuple[Results, list[str]]:
    from bench import drill

    return drill.report(drill.measure("all"))


Results = dict[str, float]
Bench = Callable[[argparse.Namespace, "LocalRegion | None", Path], tuple[Results, list[str]]]
BENCHMARKS: dict[str, tuple[str, Bench]] = {
    "ledger-sql": (
        "ledger_sql_vs_pgbench (the ledger's statement and pgbench on one server of their own)",
        _ledger_sql_vs_pgbench,
    ),
    "pipeline": ("pipeline_tps (the processor through the emulator, with the calls it makes)", _pipeline),
    "cold": ("cold_start_vs_boto3", _cold_start_vs_boto3),
    "monitor": ("monitor_cost (on the twin)", _monitor_cost),
    "failover": ("failover_overhead (on the twin)", _failover_overhead),
    "drill": ("drill_region_loss (make drill, on a twin of its own)", _drill_wall_time),
    "drill-all": ('drill_all (make drill ARGS="--scenario all", a twin per scenario)', _drill_all_wall_time),
}


EMULATOR_LOG = Path("reports/bench-emulator.log")


def _emulator_log_to_file(path: Path) -> None:
    """The in-process moto server logs every request (werkzeug's access log): into a file, kept for debugging,
    not between the figures."""
    path.parent.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger("werkzeug")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(logging.FileHandler(path, mode="w", encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    selected = args.only or list(BENCHMARKS)
    _emulator_log_to_file(EMULATOR_LOG)
    from tandem.local import local_region  # imports boto3 and moto: after argparse, so --help stays fast

    results: dict[str, float] = {}
    broken: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp, contextlib.ExitStack() as stack:
            local = None
            if NEEDS_LOCAL_REGION & set(selected):
                print("starting the local region (moto server + PostgreSQL) ...", flush=True)
                local = stack.enter_context(local_region())
            for key in BENCHES:
                if key not in selected:
                    continue
                name, bench = BENCHMARKS[key]
                print(f"\n{name}", flush=True)
                try:
                    values, lines = bench(args, local, Path(tmp))
                except Exception as exc:  # a broken benchmark must not hide the other's result
                    broken.append(name)
                    traceback.print_exc()
                    print(f"  BROKEN: {type(exc).__name__}: {exc}", flush=True)
                    continue
                results |= values
                print("\n".join(lines), flush=True)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the local region itself did not come up (or down)
        traceback.print_exc()
        print(f"bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    print(f"\n(the emulator's request log: {EMULATOR_LOG})")
    for name, value in results.items():
        print(f"{name}={value:.2f}" if not name.endswith("_per_run") else f"{name}={value:.0f}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
