"""cold_start_vs_boto3: a Lambda cold start (import + first 10-message invoke) against "import boto3 + one client".

Each sample is a fresh interpreter, timed from the parent's spawn to the child's stamp at the end of its
work (interpreter teardown excluded: Lambda does not wait for it). Kinds alternate in ABBA order so slow
drift (page cache, CPU frequency, moto's growing state) lands on both. One discarded run of each kind
first warms the page cache, the bytecode cache and the schema (a deployed region's ledger is migrated).

Bytecode (``--bytecode``): by default (``shipped``) both kinds run on the built artifact - ``make build``'s
package with its .pyc, copied so that it runs on this machine (:mod:`bench.artifact`) - as the only thing on
``sys.path`` besides the standard library (``-S``, ``PYTHONPATH`` = the copy) with bytecode writing off, as
in Lambda, whose /var/task is read-only: the cold start measured is the one that ships. The baseline imports
the artifact's boto3 the same way. ``cached`` loads every module from the development environment through a
private ``PYTHONPYCACHEPREFIX`` filled by the warm-up pair; ``inherit`` keeps the environment as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from bench.artifact import shipped_copy
from bench.spawn import BenchError, ChildRun, child_env, run_child
from bench.stats import median
from bench.workload import Transfers, event_transaction_ids
from tandem.local import LocalRegion
from tandem.localpg import LocalPostgres

TARGET = 1.5
SEED_BASE = 1_000_000  # cold children's seeds (distinct transaction ids); the throughput child uses seed 1
BYTECODE_MODES = ("shipped", "cached", "inherit")


@dataclass(frozen=True)
class ColdStart:
    cold: list[ChildRun]
    boto3: list[ChildRun]
    bytecode: str
    swapped: tuple[str, ...] = ()  # packages of the artifact replaced by this machine's build (native code)
    snapstart: tuple[ChildRun, ...] = ()  # restored from a snapshot (a fork): after-restore hooks + first invoke

    @property
    def restore_ms(self) -> float:
        """SnapStart: from the restore (the fork) to the end of the first invocation, median."""
        return median([r.between_ms("restoring_ns", "done_ns") for r in self.snapstart])

    @property
    def cold_ms(self) -> float:
        return median([r.since_spawn_ms("done_ns") for r in self.cold])

    @property
    def boto3_ms(self) -> float:
        return median([r.since_spawn_ms("done_ns") for r in self.boto3])

    @property
    def ratio(self) -> float:
        return self.cold_ms / self.boto3_ms


def _check_committed(pg: LocalPostgres, expected: list[str]) -> None:
    """Every cold child's batch must be in the ledger: a child that did nothing would look fast."""
    conn = pg.connect()
    try:
        rows = conn.run(
            "SELECT count(*) FROM ledger_transaction WHERE transaction_id = ANY(CAST(:ids AS uuid[]))", ids=expected
        ) or [[0]]
    finally:
        conn.close()
    found = int(str(rows[0][0]))
    if found != len(expected):
        raise BenchError(f"cold-start children committed {found} of {len(expected)} transactions")


def measure(local: LocalRegion, *, runs: int, bytecode: str, workdir: Path) -> ColdStart:
    env = child_env(local.function_env("transaction_processor"))
    flags: tuple[str, ...] = ()
    swapped: list[str] = []
    if bytecode == "shipped":
        artifact, swapped = shipped_copy(workdir)
        # bench.child itself comes from the working directory (python -m); nothing else of the repository
        env.update(PYTHONPATH=str(artifact), PYTHONDONTWRITEBYTECODE="1", LAMBDA_TASK_ROOT=str(artifact))
        flags = ("-S",)  # no site-packages: the artifact and the standard library, as in Lambda
    elif bytecode == "cached":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    expected: list[str] = []

    def cold(kind: str = "cold") -> ChildRun:
        seed = SEED_BASE + len(expected)
        event = Transfers(seed, region=local.region).event()
        expected.extend(event_transaction_ids(event))
        path = workdir / f"event-{seed}.json"
        path.write_text(json.dumps(event), encoding="utf-8")
        run = run_child(kind, [str(path)], env, workdir, timeout=120, flags=flags)
        if run.result["failures"]:
            raise BenchError(f"{kind} child (seed {seed}) had {run.result['failures']} failed records")
        return run

    def boto3() -> ChildRun:
        return run_child("boto3", [], env, workdir, timeout=120, flags=flags)

    boto3()
    cold()  # warm-up pair, discarded
    result = ColdStart(cold=[], boto3=[], bytecode=bytecode, swapped=tuple(swapped))
    for i in range(runs):
        first_boto3 = i % 4 in (0, 3)  # ABBA ABBA ...
        for kind in ("boto3", "cold") if first_boto3 else ("cold", "boto3"):
            if kind == "cold":
                result.cold.append(cold())
            else:
                result.boto3.append(boto3())
    result = replace(result, snapstart=tuple(cold("snapstart") for _ in range(runs)))
    _check_committed(local.postgres, expected)
    return result


def report(r: ColdStart) -> list[str]:
    def spread(values: list[float]) -> str:
        return f"min {min(values):.0f}, max {max(values):.0f}"

    def med(runs: list[ChildRun], start: str, end: str | None = None) -> str:
        values = [c.since_spawn_ms(start) if end is None else c.between_ms(start, end) for c in runs]
        return f"{median(values):.0f} ms"

    cold = [c.since_spawn_ms("done_ns") for c in r.cold]
    base = [b.since_spawn_ms("done_ns") for b in r.boto3]
    return [
        f"  bytecode  : {r.bytecode}"
        + (f" (this machine's build of {', '.join(r.swapped)}: the artifact's is for arm64)" if r.swapped else ""),
        f"  cold start: median {r.cold_ms:6.0f} ms  ({len(cold)} runs, {spread(cold)}; to process exit"
        f" {median([c.wall_ms for c in r.cold]):.0f} ms)",
        f"              interpreter start {med(r.cold, 'started_ns')},"
        f" read event {med(r.cold, 'started_ns', 'prepared_ns')},"
        f" import handler (init) {med(r.cold, 'prepared_ns', 'imported_ns')},"
        f" first invoke {med(r.cold, 'imported_ns', 'done_ns')}",
        f"  boto3     : median {r.boto3_ms:6.0f} ms  ({len(base)} runs, {spread(base)}; to process exit"
        f" {median([b.wall_ms for b in r.boto3]):.0f} ms)",
        f"              interpreter start {med(r.boto3, 'started_ns')},"
        f" import boto3 {med(r.boto3, 'started_ns', 'imported_ns')},"
        f" client('s3') {med(r.boto3, 'imported_ns', 'done_ns')}",
    ]


def snapstart_report(r: ColdStart) -> str:
    restored = list(r.snapstart)
    return (
        f"  snapstart : median {r.restore_ms:6.0f} ms  from the restore to the end of the first invocation"
        f" ({len(restored)} runs, restored as a fork of the snapshot process: after-restore hooks"
        f" {median([c.between_ms('restoring_ns', 'restored_ns') for c in restored]):.0f} ms, first invoke"
        f" {median([c.between_ms('restored_ns', 'done_ns') for c in restored]):.0f} ms; Lambda's own restore of"
        f" the snapshot comes on top) = {r.restore_ms / r.cold_ms:.2f} of the cold start"
    )
