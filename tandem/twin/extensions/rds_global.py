"""Aurora global database switchover and failover for moto 5.2.5.

moto stores global clusters and their members (``GlobalCluster.members``, ``DBCluster.is_writer``) but has no
``FailoverGlobalCluster``/``SwitchoverGlobalCluster``, so the writer never moves. moto dispatches an action to
the snake_case method of the same name on ``RDSResponse``, so this module adds those two methods (and the
backend logic they need); both moto servers of the twin, and moto in-process, share that class and the
backends, so a switchover requested via one region's endpoint is visible from the other.

The twin backs the clusters with real PostgreSQL: before the writer flips, the registered promotion handler
(:func:`set_promotion_handler`) makes the database follow; if it raises, the call fails and nothing flips. A
handler that takes the promotion on in the background (a slow control plane) returns a ``Future``: the call
is accepted at once, the global cluster stays ``switching-over``/``failing-over`` and the writer flips when
the future succeeds (a future that fails or is cancelled leaves the writer where it was).

While a promotion runs, ``DescribeGlobalClusters`` shows the global cluster as ``switching-over`` /
``failing-over`` with a ``FailoverState``, as AWS does; once it completes, the state is ``available`` and
``FailoverState`` is empty again (AWS: "empty unless an operation is scheduled or in progress"). The action's
own response carries the ``FailoverState`` AWS returns when it accepts the request.

Also fixed here, because the failover path depends on them: ``DescribeGlobalClusters`` ignores
``GlobalClusterIdentifier`` in moto (it always lists every global cluster and never raises
``GlobalClusterNotFoundFault``), and ``CreateGlobalCluster(SourceDBClusterIdentifier=...)`` leaves the source
cluster with ``IsWriter`` false, so such a global cluster would have no writer to fail over from.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

from moto.core.responses import ActionResult
from moto.rds.exceptions import (
    DBClusterNotFoundError,
    InvalidDBClusterStateFault,
    InvalidParameterCombination,
    InvalidParameterValue,
    RDSClientError,
)
from moto.rds.models import DBCluster, GlobalCluster, RDSBackend, rds_backends
from moto.rds.responses import RDSResponse

from tandem import moto_ext

log = logging.getLogger("tandem.twin")

Mode = Literal["switchover", "failover"]


@dataclass(frozen=True)
class PromotionRequest:
    """What the promotion handler must do before the emulated writer moves to ``to_cluster_arn``.

    ``switchover``: wait until the target has replayed everything, then swap roles (no data loss).
    ``failover``: promote the target at once (what was not replicated yet is lost).
    """

    global_cluster_id: str
    from_cluster_arn: str
    to_cluster_arn: str
    to_region: str
    mode: Mode


#: Returns None once the database has followed, or a Future that completes when it has (see the docstring).
PromotionHandler = Callable[[PromotionRequest], "Future[None] | None"]


class GlobalClusterNotFoundFault(RDSClientError):
    def __init__(self, identifier: str) -> None:
        super().__init__("GlobalClusterNotFoundFault", f"Global cluster {identifier} not found.")


class InvalidGlobalClusterStateFault(RDSClientError):
    """moto's own class of this name takes an ARN and always says "is not empty"; we need other messages."""

    def __init__(self, message: str) -> None:
        super().__init__("InvalidGlobalClusterStateFault", message)


# Module-level on purpose: moto's classes are process-global, so the hook they call is too. The twin daemon
# registers one handler (its PostgreSQL pair); ``None`` means "just flip" (unit tests, plain moto).
_handler: PromotionHandler | None = None
# Guards the check-and-mark of a global cluster's status, so two concurrent requests cannot both start.
_state_lock = threading.Lock()

# moto serialises GlobalCluster.FailoverState from this attribute, which moto itself never sets.
FAILOVER_STATE_ATTR = "failover_state"
_IN_PROGRESS: dict[Mode, str] = {"switchover": "switching-over", "failover": "failing-over"}


def set_promotion_handler(handler: PromotionHandler | None) -> None:
    """Register the callable run before every switchover/failover flips the writer (``None`` removes it)."""
    global _handler
    _handler = handler


@functools.cache
def install() -> None:
    """Patch moto's RDS response and backend classes (once per process)."""
    moto_ext.apply()
    patches: list[tuple[type, str, Callable[..., Any]]] = [
        (RDSResponse, "failover_global_cluster", _failover_global_cluster_response),
        (RDSResponse, "switchover_global_cluster", _switchover_global_cluster_response),
        (
            RDSResponse,
            "describe_global_clusters",
            _describe_global_clusters_response(RDSResponse.describe_global_clusters),
        ),
        (RDSBackend, "create_global_cluster", _create_global_cluster(RDSBackend.create_global_cluster)),
    ]
    for cls, name, function in patches:
        setattr(cls, name, function)


# ---------------------------------------------------------------------------------------------- responses
# Plain functions assigned to the class: moto only dispatches to attributes that are functions.


def _failover_global_cluster_response(self: RDSResponse) -> ActionResult:
    params = self.params
    allow_data_loss = params.get("AllowDataLoss")
    switchover = params.get("Switchover")
    if allow_data_loss is not None and switchover is not None:
        raise InvalidParameterCombination("AllowDataLoss and Switchover cannot be specified together.")
    # AWS: AllowDataLoss=true is a failover; anything else (Switchover, or neither) is a switchover.
    mode: Mode = "failover" if allow_data_loss else "switchover"
    view = promote(self.current_account, params["GlobalClusterIdentifier"], params["TargetDbClusterIdentifier"], mode)
    return ActionResult({"GlobalCluster": view})


def _switchover_global_cluster_response(self: RDSResponse) -> ActionResult:
    params = self.params
    view = promote(self.current_account, params["GlobalClusterIdentifier"], params["TargetDbClusterIdentifier"])
    return ActionResult({"GlobalCluster": view})


def _describe_global_clusters_response(
    original: Callable[[RDSResponse], ActionResult],
) -> Callable[[RDSResponse], ActionResult]:
    def describe_global_clusters(self: RDSResponse) -> ActionResult:
        identifier = self.params.get("GlobalClusterIdentifier")
        if not identifier:
            return original(self)
        return ActionResult({"GlobalClusters": [find_global_cluster(self.current_account, identifier)]})

    return describe_global_clusters


def _create_global_cluster(original: Callable[..., GlobalCluster]) -> Callable[..., GlobalCluster]:
    def create_global_cluster(self: RDSBackend, *args: Any, **kwargs: Any) -> GlobalCluster:
        cluster = original(self, *args, **kwargs)
        if cluster.members and not any(m.is_writer for m in cluster.members):
            cluster.members[0].is_writer = True  # the source cluster is the primary, as in AWS
        return cluster

    return create_global_cluster


# ---------------------------------------------------------------------------------------------- backend logic


def _account_backends(account_id: str) -> Iterator[RDSBackend]:
    # moto's responses keep global clusters in us-east-1 ("global_backend"), but create_db_cluster looks in
    # every region; search the same way so either path finds them.
    backends = rds_backends[account_id]
    yield backends["us-east-1"]
    for region, backend in backends.items():
        if region != "us-east-1":
            yield backend


def find_global_cluster(account_id: str, identifier: str) -> GlobalCluster:
    """The global cluster named (or ARN-identified) by ``identifier``, else GlobalClusterNotFoundFault."""
    wanted = identifier.rsplit(":", 1)[-1].lower() if identifier.startswith("arn:") else identifier.lower()
    for backend in _account_backends(account_id):
        cluster = backend.global_clusters.get(wanted)
        if cluster is not None:
            return cluster
    raise GlobalClusterNotFoundFault(identifier)


def _find_member(account_id: str, global_cluster: GlobalCluster, target: str) -> DBCluster:
    members: list[DBCluster] = list(global_cluster.members)
    if target.startswith("arn:"):
        for member in members:
            if member.db_cluster_arn == target:
                return member
    else:
        matches = [m for m in members if m.db_cluster_identifier == target.lower()]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidParameterValue(
                f"Several members of global cluster {global_cluster.global_cluster_identifier} are named "
                f"{target}; use the DB cluster ARN."
            )
    if not _cluster_exists(account_id, target):
        raise DBClusterNotFoundError(target)
    raise InvalidParameterValue(
        f"DB cluster {target} is not a member of global cluster {global_cluster.global_cluster_identifier}."
    )


def _cluster_exists(account_id: str, target: str) -> bool:
    if target.startswith("arn:"):
        parts = target.split(":")
        if len(parts) < 7 or parts[4] != account_id:
            return False
        backend = rds_backends[account_id].get(parts[3])
        return backend is not None and parts[6].lower() in backend.clusters
    return any(target.lower() in backend.clusters for backend in _account_backends(account_id))


class _GlobalClusterView:
    """The global cluster as the action's response shows it: the operation AWS has just accepted.

    moto serialises by reading attributes, so this delegates everything but the in-flight status.
    """

    def __init__(self, cluster: GlobalCluster, status: str, failover_state: dict[str, Any]) -> None:
        self._cluster = cluster
        self.status = status
        self.failover_state = failover_state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cluster, name)


def promote(account_id: str, global_cluster_id: str, target: str, mode: Mode = "switchover") -> _GlobalClusterView:
    """Make ``target`` the writer of the global cluster, after the promotion handler has done so for real."""
    global_cluster = find_global_cluster(account_id, global_cluster_id)
    to_cluster = _find_member(account_id, global_cluster, target)
    if to_cluster.is_writer:
        raise InvalidParameterValue(
            f"DB cluster {to_cluster.db_cluster_arn} is already the primary cluster of global cluster "
            f"{global_cluster.global_cluster_identifier}."
        )
    if to_cluster.status != "available":
        raise InvalidDBClusterStateFault(f"DB cluster {to_cluster.db_cluster_arn} is not available.")
    writers = [m for m in global_cluster.members if m.is_writer]
    if not writers:
        raise InvalidGlobalClusterStateFault(
            f"Global cluster {global_cluster.global_cluster_identifier} has no primary cluster."
        )
    from_cluster = writers[0]
    if mode == "switchover" and from_cluster.status != "available":
        # A switchover needs a healthy primary to synchronise from; that is what failover is for.
        raise InvalidDBClusterStateFault(
            f"Primary DB cluster {from_cluster.db_cluster_arn} is not available; use a failover with AllowDataLoss."
        )
    failover_state = {
        "Status": "pending",
        "FromDbClusterArn": from_cluster.db_cluster_arn,
        "ToDbClusterArn": to_cluster.db_cluster_arn,
        "IsDataLossAllowed": mode == "failover",
    }
    with _state_lock:
        if global_cluster.status != "available":
            raise InvalidGlobalClusterStateFault(
                f"Global cluster {global_cluster.global_cluster_identifier} is in state {global_cluster.status}, "
                "not available."
            )
        global_cluster.status = _IN_PROGRESS[mode]
        setattr(global_cluster, FAILOVER_STATE_ATTR, {**failover_state, "Status": _IN_PROGRESS[mode]})
    pending: Future[None] | None = None
    try:
        handler = _handler
        if handler is not None:
            request = PromotionRequest(
                global_cluster_id=global_cluster.global_cluster_identifier,
                from_cluster_arn=from_cluster.db_cluster_arn,
                to_cluster_arn=to_cluster.db_cluster_arn,
                to_region=to_cluster.region,
                mode=mode,
            )
            try:
                pending = handler(request)
            except Exception as exc:
                raise InvalidGlobalClusterStateFault(
                    f"{mode.capitalize()} of global cluster {global_cluster.global_cluster_identifier} to "
                    f"{to_cluster.db_cluster_arn} failed: {exc}"
                ) from exc
        if pending is None:
            _flip(global_cluster, to_cluster)
    finally:
        if pending is None:
            _settle(global_cluster)
    # accepted; in progress until the handler's future completes (at once if it has already)
    if pending is not None:
        pending.add_done_callback(functools.partial(_finish, global_cluster, to_cluster))
    return _GlobalClusterView(global_cluster, _IN_PROGRESS[mode], failover_state)


def _flip(global_cluster: GlobalCluster, to_cluster: DBCluster) -> None:
    with _state_lock:
        for member in global_cluster.members:
            member.is_writer = member is to_cluster


def _settle(global_cluster: GlobalCluster) -> None:
    """The operation is over: the global cluster is available again, with no FailoverState."""
    with _state_lock:
        global_cluster.status = "available"
        setattr(global_cluster, FAILOVER_STATE_ATTR, None)


def _finish(global_cluster: GlobalCluster, to_cluster: DBCluster, done: Future[None]) -> None:
    """A promotion the handler finished in the background: the writer flips if it succeeded."""
    try:
        error = None if not done.cancelled() else "cancelled"
        if error is None and done.exception() is not None:
            error = str(done.exception())
        if error is None:
            _flip(global_cluster, to_cluster)
        else:
            log.warning("promotion of %s to %s failed: %s", global_cluster.global_cluster_identifier,
                        to_cluster.db_cluster_arn, error)  # fmt: skip
    finally:
        _settle(global_cluster)
