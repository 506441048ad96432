"""The Aurora global database as two real PostgreSQL servers: a writer and a streaming standby.

Replication is PostgreSQL's own (``pg_basebackup -R``), so lag and data loss are real: an unplanned
failover promotes the standby with whatever it has replayed; a planned switchover first shuts the writer
down cleanly (PostgreSQL then ships every WAL record to the standby), waits until the standby has replayed
up to the writer's last checkpoint, and only then promotes - no loss. The old writer comes back as a
standby of the new one (rebuilt from a base backup, as Aurora re-creates a secondary). Each cluster has a
reader endpoint and a writer endpoint that answers only in the writer region, as a global secondary's writer
endpoint is inactive; both check IAM database authentication tokens at login (:mod:`tandem.twin.endpoints`).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pg8000.native
from pg8000.native import literal

from tandem.localpg import LocalPostgres, pg_bin
from tandem.twin.endpoints import READER_HOST, WRITER_HOST, ClusterEndpoints

STATUS_SQL = Path(__file__).with_name("aurora_global_db_status.sql")


class AuroraError(RuntimeError):
    pass


@dataclass
class AuroraGlobal:
    base_dir: Path
    primary_region: str
    secondary_region: str
    nodes: dict[str, LocalPostgres] = field(default_factory=dict)
    writer: str = ""
    down: set[str] = field(default_factory=set)
    gates: dict[str, ClusterEndpoints] = field(default_factory=dict)  # each region's reader and writer endpoints
    stale: set[str] = field(default_factory=set)  # regions whose data diverged: rebuild before serving
    replay_paused: bool = False  # WAL replay paused on the standby (also on one rebuilt meanwhile)
    cut: bool = False  # the regions are partitioned: the standby replays nothing more until healed
    split: set[str] = field(default_factory=set)  # old writers a partition cut off: still take writes until healed
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _starting: threading.Thread | None = field(default=None, repr=False)
    _start_error: Exception | None = field(default=None, repr=False)

    @property
    def regions(self) -> tuple[str, str]:
        return (self.primary_region, self.secondary_region)

    def start(self) -> None:
        self.start_in_background()
        self.wait_ready()

    def start_in_background(self) -> None:
        """Allocate both servers (their ports are known at once) and bring them up on a thread: the twin
        provisions the emulated regions meanwhile, and :meth:`wait_ready` joins before a cluster is needed."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)  # the postgres OS user must traverse it (see tandem.localpg)
        self.nodes[self.primary_region] = LocalPostgres(base_dir=self.base_dir / self.primary_region)
        self.nodes[self.secondary_region] = LocalPostgres(base_dir=self.base_dir / self.secondary_region)
        self.writer = self.primary_region
        for region, node in self.nodes.items():
            primary = self.nodes[self.primary_region]  # its certificate: the CA the functions verify against
            self.gates[region] = ClusterEndpoints(
                node.port,
                self.base_dir / f"{region}.writer",
                region,
                primary.data_dir / "server.crt",
                primary.data_dir / "server.key",
            )
            self.gates[region].start()
        self._open_writer_gate()
        self._starting = threading.Thread(target=self._bring_up, name="aurora-start", daemon=True)
        self._starting.start()

    def wait_ready(self) -> None:
        """Join the start-up thread; its failure is raised here."""
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        if self._start_error is not None:
            raise self._start_error

    def _bring_up(self) -> None:
        try:
            with self._lock:
                primary, standby = self.nodes[self.primary_region], self.nodes[self.secondary_region]
                primary.start()
                self._name_region(primary, self.primary_region)
                install_aurora_builtins(primary)  # the ledger's schema is the deploy's (LedgerSchema), as in AWS
                standby.standby_of(primary, application_name=self.secondary_region)
                self._name_region(standby, self.secondary_region)
        except Exception as exc:
            self._start_error = exc

    def stop(self) -> None:
        with self._lock:
            for node in self.nodes.values():
                node.halt("immediate")
            for gate in self.gates.values():
                gate.stop()

    def _open_writer_gate(self) -> None:
        """The writer region's cluster endpoint relays to its server; the others' are inactive."""
        for region, gate in self.gates.items():
            gate.open(region == self.writer or region in self.split)

    def attach_cluster(self, region: str, props: dict[str, Any]) -> tuple[str, str, int]:
        """A deployment's cluster in ``region``: served by that region's server; a cluster that declares master
        credentials (the primary's, from the generated secret) gets that user on the writer, and through
        replication on the standby too. Returns (writer host, reader host, port) for its endpoints."""
        self.wait_ready()
        with self._lock:
            user, password = props.get("MasterUsername"), props.get("MasterUserPassword")
            if user and password:
                self.nodes[self.writer].ensure_superuser(str(user), str(password))
            return WRITER_HOST, READER_HOST, self.nodes[region].port

    def uri(self, region: str) -> str:
        return self.nodes[region].uri

    def is_up(self, region: str) -> bool:
        return region not in self.down

    def role(self, region: str) -> str:
        if region in self.split:
            return "writer (cut off: split brain)"
        return "writer" if region == self.writer else "reader"

    # ------------------------------------------------------------------ partitions
    def partition(self, region: str) -> None:
        """The regions cannot reach each other (``region`` is cut off): WAL stops reaching the standby, so it
        replays nothing more; both servers keep serving their own region."""
        with self._lock:
            if region not in self.nodes:
                raise AuroraError(f"unknown region {region}")
            self.cut = True
            if self.reader not in self.down:
                self._query(self.nodes[self.reader], "SELECT pg_wal_replay_pause()")

    def heal(self, region: str) -> None:
        """Connected again: an old writer a failover left cut off is demoted - rebuilt as a standby of the
        writer, so what it committed alone is gone from the database (its journal keeps it) - and the standby
        replays again."""
        with self._lock:
            if region not in self.nodes:
                raise AuroraError(f"unknown region {region}")
            self.cut = False
            for old in sorted(self.split):
                self.split.discard(old)
                self._open_writer_gate()  # its cluster endpoint goes inactive first
                if old not in self.down:
                    self._rebuild_standby(old)
            if not self.replay_paused and self.reader not in self.down:
                self._query(self.nodes[self.reader], "SELECT pg_wal_replay_resume()")

    # ------------------------------------------------------------------ outages
    def outage(self, region: str) -> None:
        """The region's database dies with it (a crash, not a clean shutdown)."""
        with self._lock:
            self.nodes[region].halt("immediate")
            self.down.add(region)

    def restore(self, region: str) -> None:
        """The region comes back: as the writer if it still is, else as a standby of the writer."""
        with self._lock:
            self.down.discard(region)
            node = self.nodes[region]
            if region == self.writer:
                node.launch()
            elif region in self.stale or not (node.data_dir / "standby.signal").exists():
                self._rebuild_standby(region)
            else:
                node.launch()
                if self.replay_paused or self.cut:  # a pause does not survive a restart; the operator's does
                    self._query(node, "SELECT pg_wal_replay_pause()")

    # ------------------------------------------------------------------ role changes
    def promote(self, to_region: str, mode: str) -> None:
        """What the global cluster's promotion asks for: ``switchover`` (planned) or ``failover`` (unplanned)."""
        if mode == "switchover":
            self.switchover(to_region)
        elif mode == "failover":
            self.failover(to_region)
        else:
            raise AuroraError(f"a promotion is a switchover or a failover, not {mode!r}")

    def failover(self, to_region: str) -> None:
        """Unplanned: promote ``to_region`` now, with what it has replayed (AllowDataLoss)."""
        with self._lock:
            self._check_target(to_region)
            old = self.writer
            if self.cut and old not in self.down:
                self.split.add(old)  # out of reach: it keeps its writer, and takes writes, until healed
            elif old not in self.down:
                self.nodes[old].halt("immediate")  # fence: the old writer must not take more writes
            node = self.nodes[to_region]
            if self.replay_paused or self.cut:  # what it received but did not replay is not there
                node.promote_at(str(self._query(node, "SELECT pg_last_wal_replay_lsn()")))
            else:
                node.promote()
            self.writer = to_region
            self._open_writer_gate()
            self.stale.add(old)
            if old not in self.down and old not in self.split:
                self._rebuild_standby(old)

    def switchover(self, to_region: str, timeout: float = 30.0) -> None:
        """Planned: no committed transaction may be lost, so both regions must be up."""
        with self._lock:
            self._check_target(to_region)
            old = self.writer
            if old in self.down:
                raise AuroraError(f"switchover needs the writer region {old} to be up; use failover")
            if self.cut:
                raise AuroraError(f"switchover needs the regions connected; {old} is cut off: use failover")
            self.nodes[old].halt("fast")  # clean shutdown: every WAL record reaches the standby first
            target_lsn = self._checkpoint_lsn(self.nodes[old])
            self._wait_replayed(self.nodes[to_region], target_lsn, timeout)
            self.nodes[to_region].promote()
            self.writer = to_region
            self._open_writer_gate()
            self._rebuild_standby(old)

    @property
    def reader(self) -> str:
        return next(r for r in self.regions if r != self.writer)

    def pause_replay(self) -> None:
        """Stop applying WAL on the standby (it keeps receiving): the secondary falls behind for real."""
        with self._lock:
            self.replay_paused = True
            if self.reader not in self.down:
                self._query(self.nodes[self.reader], "SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        with self._lock:
            self.replay_paused = False
            if self.reader not in self.down:
                self._query(self.nodes[self.reader], "SELECT pg_wal_replay_resume()")

    def replay_lag_bytes(self) -> int | None:
        """WAL bytes the standby has not replayed yet (None when either side is down)."""
        reader = self.reader
        if self.writer in self.down or reader in self.down or self.split:  # split: no standby to measure
            return None
        try:
            w = self._query(self.nodes[self.writer], "SELECT CAST(pg_current_wal_lsn() AS text)")
            lag = self._query(self.nodes[reader], f"SELECT pg_wal_lsn_diff('{w}', pg_last_wal_replay_lsn())")
        except (pg8000.native.InterfaceError, pg8000.native.DatabaseError, OSError):
            return None
        return int(float(str(lag)))

    # ------------------------------------------------------------------ helpers
    def _check_target(self, to_region: str) -> None:
        if to_region not in self.nodes:
            raise AuroraError(f"unknown region {to_region}")
        if to_region == self.writer:
            raise AuroraError(f"{to_region} is already the writer")
        if to_region in self.down:
            raise AuroraError(f"{to_region} is down")

    def _rebuild_standby(self, region: str) -> None:
        node = self.nodes[region]
        node.halt("immediate")
        node.standby_of(self.nodes[self.writer], application_name=region)
        self._name_region(node, region)  # pg_basebackup copied the writer's postgresql.auto.conf
        self.stale.discard(region)
        if self.replay_paused or self.cut:
            self._query(node, "SELECT pg_wal_replay_pause()")

    @staticmethod
    def _name_region(node: LocalPostgres, region: str) -> None:
        """The server's own region for aurora_global_db_status(): a per-server setting, not a replicated one."""
        conn = node.connect(timeout=10)
        try:
            conn.run(f"SET tandem.aws_region = {literal(region)}")  # PostgreSQL 15 wants the placeholder known
            conn.run(f"ALTER SYSTEM SET tandem.aws_region = {literal(region)}")
            conn.run("SELECT pg_reload_conf()")
        finally:
            conn.close()

    @staticmethod
    def _checkpoint_lsn(node: LocalPostgres) -> str:
        out = subprocess.run(
            [pg_bin("pg_controldata"), str(node.data_dir)], capture_output=True, text=True, check=True
        ).stdout
        match = re.search(r"Latest checkpoint location:\s+([0-9A-F]+/[0-9A-F]+)", out)
        if not match:
            raise AuroraError("cannot read the writer's last checkpoint location")
        return match.group(1)

    def _wait_replayed(self, node: LocalPostgres, lsn: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self._query(node, f"SELECT pg_last_wal_replay_lsn() >= CAST('{lsn}' AS pg_lsn)")
            if done is True:
                return
            time.sleep(0.02)
        raise AuroraError(f"standby did not replay up to {lsn} within {timeout} s")

    @staticmethod
    def _query(node: LocalPostgres, sql: str) -> object:
        conn = node.connect(timeout=5)
        try:
            rows = conn.run(sql) or [[None]]
            return rows[0][0]
        finally:
            conn.close()


def install_aurora_builtins(node: LocalPostgres) -> None:
    """What Aurora PostgreSQL has built in that a plain server lacks: ``aurora_global_db_status()`` (computed
    from the real streaming state, see the SQL file) and the ``rds_iam`` role, whose members log in with IAM
    tokens only (:mod:`tandem.twin.endpoints`). Idempotent."""
    conn = node.connect(timeout=10)
    try:
        conn.run(STATUS_SQL.read_text(encoding="utf-8"))
        if not conn.run("SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam'"):
            conn.run("CREATE ROLE rds_iam NOLOGIN")
    finally:
        conn.close()
