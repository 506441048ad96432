"""pgbench, PostgreSQL's own benchmark: the baseline the ledger's figures are ratios against.

Its built-in TPC-B-like script at scale 1: five statements and one commit per transaction, one branch row
that every transaction updates (hot as soon as there are two clients). Over TLS like the ledger's writers.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from bench.spawn import BenchError
from tandem.localpg import LocalPostgres, pg_bin

DATABASE = "pgbench"


@dataclass(frozen=True)
class PgbenchTps:
    clients: int
    tps: float
    latency_ms: float
    transactions: int
    seconds: int


def _run(pg: LocalPostgres, *args: str) -> str:
    env = {**os.environ, "PGPASSWORD": pg.password, "PGSSLMODE": "require", "PGAPPNAME": "bench-pgbench"}
    cmd = [pg_bin("pgbench"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, *args, DATABASE]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"pgbench {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout + proc.stderr


def init(pg: LocalPostgres) -> None:
    """A fresh pgbench database, scale 1, on ``pg``."""
    admin = pg.connect("postgres")
    try:
        admin.run(f"DROP DATABASE IF EXISTS {DATABASE}")
        admin.run(f"CREATE DATABASE {DATABASE}")
    finally:
        admin.close()
    _run(pg, "-i", "-s", "1", "-q")


def tps(pg: LocalPostgres, clients: int, seconds: int) -> PgbenchTps:
    """``clients`` connections (at most two threads: this machine's cores) for ``seconds``."""
    out = _run(pg, "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds))
    rate = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", out, re.MULTILINE)
    latency = re.search(r"^latency average = ([0-9.]+) ms", out, re.MULTILINE)
    done = re.search(r"^number of transactions actually processed: (\d+)", out, re.MULTILINE)
    if not rate or not latency or not done:
        raise BenchError(f"cannot read pgbench's report:\n{out[-2000:]}")
    return PgbenchTps(clients, float(rate.group(1)), float(latency.group(1)), int(done.group(1)), seconds)
