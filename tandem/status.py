"""`tandem status`: one view of both regions, read through the same AWS APIs in the twin and in AWS.

Each region is read from its own endpoints only (its replica of the global table, its Lambda, its RDS), so a
region that does not answer costs one line in the view, never the view. What the replication monitor judged is
shown as it recorded it: without a readiness record the verdict is ``unknown`` with a reason, never a guess.

Per region (3 calls, 5 with ``--target aws``): CloudFormation DescribeStacks of the app and global stacks (AWS
only), DynamoDB GetItem of the readiness record, Lambda ListEventSourceMappings of the transaction processor,
RDS DescribeGlobalClusters. The first call that cannot reach a region marks it unreachable and skips the rest.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from tandem.local import emulator_client
from tandem.template import SAMCONFIG, samconfig_parameters
from tandem_core.heartbeat import from_attributes
from tandem_core.readiness import Verdict, readiness_key
from tandem_core.replication import STORES

UNKNOWN = "unknown"
#: samconfig.toml's app env and the global env deployed in the same region, in display order.
AWS_ENVS: tuple[tuple[str, str], ...] = (("primary", "global-primary"), ("dr", "global-secondary"))
#: Short timeouts: a region that is gone must cost seconds, not botocore's default minute per call.
AWS_CONFIG = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})
_UNREACHABLE = (BotoConnectionError, HTTPClientError)  # no answer at all (refused, timed out, cut off)


# ---------------------------------------------------------------------------------------------- access
class ClientSource(Protocol):
    """Where boto3 clients come from: the only difference between reading the twin and reading AWS."""

    def client(self, region: str, service: str) -> Any: ...


class AwsClients:
    """Real AWS, credentials the boto3 way (``profile``, else the environment / default chain)."""

    def __init__(self, profile: str | None = None) -> None:
        try:
            self._session = boto3.Session(profile_name=profile)
            credentials = self._session.get_credentials()
        except (ProfileNotFound, BotoCoreError) as exc:  # a bad profile, a failing credential_process...
            raise ValueError(one_line(str(exc))) from None
        if credentials is None:
            where = f"profile {profile!r}" if profile else "the environment, ~/.aws or --profile"
            raise ValueError(f"no AWS credentials found in {where}")
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, region: str, service: str) -> Any:
        key = (region, service)
        if key not in self._clients:
            self._clients[key] = self._session.client(service, region_name=region, config=AWS_CONFIG)
        return self._clients[key]


class TwinClients:
    """The twin's regions: each region's loopback endpoint, the emulator's fixed credentials."""

    def __init__(self, endpoints: Mapping[str, str]) -> None:
        self._endpoints = dict(endpoints)
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, region: str, service: str) -> Any:
        key = (region, service)
        if key not in self._clients:
            self._clients[key] = emulator_client(service, region, self._endpoints[region])
        return self._clients[key]


# ---------------------------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class RegionTarget:
    """What to read in one region. With stack names set, the rest is completed from their outputs."""

    region: str
    role: str
    peer_region: str | None = None
    table: str | None = None
    processor_function: str | None = None
    cluster_id: str | None = None
    global_cluster: str | None = None
    app_stack: str | None = None
    global_stack: str | None = None
    describe_stacks: bool = False  # AWS: the stacks' outputs are the truth, samconfig only the fallback


def twin_targets(status: Mapping[str, Any]) -> tuple[TwinClients, list[RegionTarget]]:
    """The twin's regions from its control API's ``/status`` (what ``tandem twin status --json`` prints)."""
    try:
        return _twin_targets(status)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"the twin's /status is not what tandem status reads ({type(exc).__name__}: {exc})") from None


def _twin_targets(status: Mapping[str, Any]) -> tuple[TwinClients, list[RegionTarget]]:
    regions: Mapping[str, Any] = status["regions"]
    targets = []
    for region, info in regions.items():
        resources = info.get("resources") or {}
        processor = (info.get("functions") or {}).get("transaction_processor") or {}
        targets.append(
            RegionTarget(
                region=region,
                role=str(info.get("role", UNKNOWN)),
                peer_region=next((r for r in regions if r != region), None),
                table=resources.get("ledger_table"),
                processor_function=processor.get("alias") or processor.get("name"),  # the alias the mapping runs
                cluster_id=info.get("cluster"),
                global_cluster=status.get("global_cluster"),
                app_stack=resources.get("stack"),
            )
        )
    return TwinClients({r: str(info["endpoint"]) for r, info in regions.items()}), targets


def aws_targets(samconfig: Path = SAMCONFIG) -> list[RegionTarget]:
    """Regions and stack names from samconfig.toml: the app envs and the global env of the same region."""
    targets = []
    for app_env, global_env in AWS_ENVS:
        app, glob = samconfig_parameters(app_env, samconfig), samconfig_parameters(global_env, samconfig)
        if app.region != glob.region:
            raise ValueError(f"{samconfig}: [{app_env}] deploys to {app.region} but [{global_env}] to {glob.region}")
        targets.append(
            RegionTarget(
                region=app.region,
                role=app.parameters.get("RegionRole", app_env),
                peer_region=app.parameters.get("PeerRegion"),
                table=glob.parameters.get("LedgerTableName"),
                global_cluster=glob.parameters.get("GlobalClusterIdentifier"),
                app_stack=app.stack_name,
                global_stack=glob.stack_name,
                describe_stacks=True,
            )
        )
    if len({t.region for t in targets}) != len(targets):
        raise ValueError(f"{samconfig}: the app envs must deploy to two different regions")
    return targets


# ---------------------------------------------------------------------------------------------- calls
class _Calls:
    """Calls into one region. The first that gets no answer marks the region unreachable; the rest are skipped."""

    def __init__(self, source: ClientSource, region: str) -> None:
        self._source = source
        self._region = region
        self.unreachable: str | None = None
        self.errors: list[str] = []

    def __call__(self, service: str, operation: str, **params: Any) -> dict[str, Any] | None:
        if self.unreachable is not None:
            return None
        what = f"{service} {operation}"
        try:
            reply: dict[str, Any] = getattr(self._source.client(self._region, service), operation)(**params)
        except _UNREACHABLE as exc:
            self.unreachable = one_line(f"{what}: {exc}")
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            line = one_line(f"{what}: {error.get('Code', 'ClientError')} {error.get('Message', '')}")
            if status >= 500:  # the region answers, but only to say it cannot serve: as good as gone
                self.unreachable = line
            else:
                self.errors.append(line)
        except BotoCoreError as exc:
            self.errors.append(one_line(f"{what}: {exc}"))
        else:
            return reply
        return None


def one_line(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class _RegionRead:
    target: RegionTarget
    view: dict[str, Any]
    writers: dict[str, bool] | None  # this region's DescribeGlobalClusters: member region -> IsWriter
    global_cluster: str | None


def read_region(source: ClientSource, target: RegionTarget, now: float) -> _RegionRead:
    """Everything ``status`` shows about one region, as far as the region answers."""
    calls = _Calls(source, target.region)
    target = _resolve(calls, target)
    reply = None
    if target.table:
        key = readiness_key(target.region)
        reply = calls("dynamodb", "get_item", TableName=target.table, Key=key, ConsistentRead=True)
    elif calls.unreachable is None:
        calls.errors.append("ledger table name unknown (no stack output, no samconfig value)")
    if reply is not None:  # what the region answered stands, even if a later call finds it gone
        readiness, peer = readiness_view(reply.get("Item"), now)
    processing, states = _processing(calls, target)
    writers, cluster_id, global_cluster = _global_writers(calls, target)
    control = _control(calls, target)
    if reply is None:
        readiness, peer = unknown_readiness("region_unreachable" if calls.unreachable else "readiness_unreadable")
    peer = {"region": target.peer_region, **peer}
    view: dict[str, Any] = {
        "role": target.role,
        "reachable": calls.unreachable is None,
        "error": calls.unreachable,
        "writer": None,
        "writer_seen_from": None,
        "processing": processing,
        "processing_state": states,
        "readiness": readiness,
        "peer": peer,
        "control": control,
        "resources": {
            "app_stack": target.app_stack,
            "table": target.table,
            "processor_function": target.processor_function,
            "cluster": cluster_id,
        },
        "errors": calls.errors,
    }
    return _RegionRead(target, view, writers, global_cluster)


def _control(calls: _Calls, target: RegionTarget) -> dict[str, Any] | None:
    """The control record and the newest execution as this region's replica holds them (None: unreadable)."""
    from failover_handler.history import PK, ExecutionRecord
    from tandem_core.control import CONTROL_KEY, epoch_keys, from_item, settle
    from tandem_core.heartbeat import from_attributes

    if not target.table:
        return None
    reply = calls("dynamodb", "get_item", TableName=target.table, Key=CONTROL_KEY, ConsistentRead=True)
    if reply is None:
        return None
    record = from_item(reply["Item"]) if "Item" in reply else None
    if record is not None and (keys := epoch_keys(record)):  # what is owed, settled by the epoch items
        epochs = calls(
            "dynamodb", "batch_get_item", RequestItems={target.table: {"Keys": keys, "ConsistentRead": True}}
        )
        record = settle(record, (epochs or {}).get("Responses", {}).get(target.table, []))
    newest = calls(  # the newest failover execution: reconciliations are recorded beside them, not counted here
        "dynamodb", "query", TableName=target.table, KeyConditionExpression="pk = :pk",
        FilterExpression="#action <> :reconcile", ExpressionAttributeNames={"#action": "action"},
        ExpressionAttributeValues={":pk": {"S": PK}, ":reconcile": {"S": "reconcile"}},
        ScanIndexForward=False, Limit=20, ConsistentRead=True,
    )  # fmt: skip
    items = (newest or {}).get("Items", [])
    last = ExecutionRecord.from_dict(from_attributes(items[0])).as_dict() if items else None
    return {
        "active_region": record.active_region if record else None,  # None: nothing has run (the primary is active)
        "epoch": record.epoch if record else 0,
        "state": record.state.value if record else "idle",
        "last_execution": None if last is None else {k: v for k, v in last.items() if k != "steps"},
    }


def _resolve(calls: _Calls, target: RegionTarget) -> RegionTarget:
    """AWS: the names the stacks really deployed (outputs), samconfig's values where a stack says nothing."""
    if not target.describe_stacks:
        return target
    app = _outputs(calls, target.app_stack)
    glob = _outputs(calls, target.global_stack)
    return replace(
        target,
        table=glob.get("LedgerTableName") or target.table,
        processor_function=app.get("TransactionProcessorAliasArn")
        or app.get("TransactionProcessorFunctionName")
        or target.processor_function,
        global_cluster=glob.get("GlobalClusterIdentifier") or target.global_cluster,
    )


def _outputs(calls: _Calls, stack: str | None) -> dict[str, str]:
    if not stack:
        return {}
    reply = calls("cloudformation", "describe_stacks", StackName=stack)
    stacks = (reply or {}).get("Stacks") or [{}]
    return {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in stacks[0].get("Outputs", [])}


def _processing(calls: _Calls, target: RegionTarget) -> tuple[bool | None, str | None]:
    """On/off from the processor's SQS event source mapping(s): on only while one is Enabled."""
    if not target.processor_function:
        if calls.unreachable is None:
            calls.errors.append("transaction processor function name unknown")
        return None, None
    reply = calls("lambda", "list_event_source_mappings", FunctionName=target.processor_function)
    if reply is None:
        return None, None
    mappings = [m for m in reply.get("EventSourceMappings", []) if ":sqs:" in str(m.get("EventSourceArn", ""))]
    states = [str(m.get("State", "?")) for m in mappings]
    if not states:
        return False, "no mapping"
    if "Enabled" in states:
        return True, ",".join(states)
    if all(s == "Disabled" for s in states):
        return False, ",".join(states)
    return None, ",".join(states)  # Enabling, Disabling, Updating...: on its way, say which way


def _global_writers(calls: _Calls, target: RegionTarget) -> tuple[dict[str, bool] | None, str | None, str | None]:
    """This region's view of the Aurora global cluster: member region -> IsWriter, our cluster id, the id."""
    params = {"GlobalClusterIdentifier": target.global_cluster} if target.global_cluster else {}
    reply = calls("rds", "describe_global_clusters", **params)
    if reply is None:
        return None, target.cluster_id, target.global_cluster
    candidates = [c for c in reply.get("GlobalClusters", []) if target.region in _member_regions(c)]
    if len(candidates) != 1:
        calls.errors.append(
            f"rds describe_global_clusters: {len(candidates)} global clusters with a member in {target.region}"
        )
        return None, target.cluster_id, target.global_cluster
    cluster = candidates[0]
    writers: dict[str, bool] = {}
    cluster_id = target.cluster_id
    for member in cluster.get("GlobalClusterMembers", []):
        arn = str(member.get("DBClusterArn", ""))
        writers[_arn_region(arn)] = bool(member.get("IsWriter"))
        if _arn_region(arn) == target.region and ":cluster:" in arn:
            cluster_id = arn.split(":cluster:", 1)[1]
    return writers, cluster_id, cluster.get("GlobalClusterIdentifier")


def _member_regions(cluster: Mapping[str, Any]) -> set[str]:
    return {_arn_region(str(m.get("DBClusterArn", ""))) for m in cluster.get("GlobalClusterMembers", [])}


def _arn_region(arn: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 else ""


# ---------------------------------------------------------------------------------------------- readiness
def unknown_readiness(reason: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """No verdict to show: ``unknown`` and why (never a verdict the monitor did not give), peer unknown."""
    readiness = {
        "verdict": UNKNOWN,
        "reasons": [reason],
        "lag_seconds": dict.fromkeys(STORES, None),
        "last_known_lag_seconds": dict.fromkeys(STORES, None),
        "measured_at": None,
        "measured_at_epoch": None,
        "age_seconds": None,
        "dependencies": None,
    }
    return readiness, {"healthy": None, "heartbeat_age_seconds": None, "probed": None}


def readiness_view(item: Mapping[str, Any] | None, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The readiness record (DynamoDB attribute values) as the monitor wrote it, plus its age; and the peer
    liveness it recorded (the latest probe, the peer heartbeat's age in this region's replica)."""
    if item is None:
        return unknown_readiness("no_readiness_record")
    try:
        data = from_attributes(item)
    except (TypeError, ValueError, KeyError, AttributeError):
        return unknown_readiness("readiness_record_malformed")
    verdict = data.get("verdict")
    reasons = data.get("reasons")
    if verdict not in {v.value for v in Verdict} or not isinstance(reasons, list):
        return unknown_readiness("readiness_record_malformed")
    lags = _mapping(data.get("lag_seconds"))
    stores = _mapping(data.get("stores"))
    measured = _number(data.get("measured_at_epoch"))
    peer = _mapping(data.get("peer"))
    healthy, probed = peer.get("healthy"), peer.get("probed")
    readiness = {
        "verdict": verdict,
        "reasons": [str(r) for r in reasons],
        "lag_seconds": {s.value: _number(lags.get(s.value)) for s in STORES},
        "last_known_lag_seconds": {
            s.value: _number(_mapping(stores.get(s.value)).get("last_known_lag_seconds")) for s in STORES
        },
        "measured_at": data.get("measured_at") if isinstance(data.get("measured_at"), str) else None,
        "measured_at_epoch": measured,
        "age_seconds": None if measured is None else round(max(0.0, now - measured), 1),
        "dependencies": data.get("dependencies") if isinstance(data.get("dependencies"), dict) else None,
    }
    return readiness, {
        "healthy": healthy if isinstance(healthy, bool) else None,
        "heartbeat_age_seconds": _number(peer.get("heartbeat_age_seconds")),
        "probed": probed if isinstance(probed, bool) else None,
    }


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


# ---------------------------------------------------------------------------------------------- the view
def collect(
    source: ClientSource, targets: Sequence[RegionTarget], target_kind: str, clock: Callable[[], float] = time.time
) -> dict[str, Any]:
    """The whole view: every region, then the global writer as each answering region's RDS sees it.

    A region's ``writer`` comes from its own RDS view when it answered, else from its peer's (the global
    cluster is one resource; ``writer_seen_from`` says whose view it is).
    """
    now = clock()
    reads = [read_region(source, t, now) for t in targets]
    views = {r.target.region: r.writers for r in reads if r.writers is not None}
    for r in reads:
        region = r.target.region
        seen = [region] if region in views.get(region, {}) else []
        seen += [other for other, writers in views.items() if other != region and region in writers]
        if seen:
            r.view["writer"] = views[seen[0]][region]
            r.view["writer_seen_from"] = seen[0]
    writer_regions = {seen_from: _writer_of(writers) for seen_from, writers in views.items()}
    agreed = set(writer_regions.values())
    controls = [r.view["control"] for r in reads if r.view.get("control") is not None]
    newest = max(controls, key=lambda c: c["epoch"], default=None)  # the replica that knows the latest epoch
    primary = next((r.target.region for r in reads if r.target.role == "primary"), None)
    return {
        "target": target_kind,
        "generated_at": _iso(now),
        "active_region": None if newest is None else (newest["active_region"] or primary),
        "epoch": None if newest is None else newest["epoch"],
        "last_execution": None if newest is None else newest["last_execution"],
        "global_cluster": {
            "id": next((r.global_cluster for r in reads if r.global_cluster), None),
            "writer_region": agreed.pop() if len(agreed) == 1 else None,
            "seen_from": writer_regions,
        },
        "regions": {r.target.region: r.view for r in reads},
    }


def _writer_of(writers: Mapping[str, bool]) -> str | None:
    found = [region for region, is_writer in writers.items() if is_writer]
    return found[0] if len(found) == 1 else None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------- entry points
def twin_view(state_dir: Path, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Read the running twin (TwinNotRunning when there is none)."""
    from tandem.twin.control import call

    source, targets = twin_targets(call(state_dir, "GET", "/status", timeout=30))
    return collect(source, targets, "twin", clock)


def aws_view(
    profile: str | None, samconfig: Path = SAMCONFIG, clock: Callable[[], float] = time.time
) -> dict[str, Any]:
    """Read real AWS: regions and stacks from samconfig.toml, credentials the boto3 way."""
    targets = aws_targets(samconfig)
    return collect(AwsClients(profile), targets, "aws", clock)


# ---------------------------------------------------------------------------------------------- printing
def to_json(view: Mapping[str, Any]) -> str:
    return json.dumps(view, indent=2, sort_keys=False)


def describe(view: Mapping[str, Any]) -> str:
    """A compact table per region, for a person at a terminal."""
    gc = view.get("global_cluster") or {}
    writer = gc.get("writer_region") or "unknown"
    cluster = f" (global cluster {gc['id']})" if gc.get("id") else ""
    lines = [f"tandem status ({view['target']}, {view['generated_at']}): global writer {writer}{cluster}"]
    if view.get("active_region"):
        last = view.get("last_execution") or {}
        tail = f"; last execution {last.get('action')} {last.get('outcome')} ({last.get('trigger')})" if last else ""
        lines.append(f"active region {view['active_region']} (epoch {view['epoch']}){tail}")
    for region, info in view["regions"].items():
        lines += ["", f"{region}  {info['role']}"]
        lines += [f"  {key:<11} {value}" for key, value in _rows(info)]
    return "\n".join(lines)


def _rows(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [("reachable", "yes" if info["reachable"] else f"NO - {info['error']}")]
    writer = _yes_no(info["writer"])
    if info["writer"] is not None and info["writer_seen_from"] is not None and not info["reachable"]:
        writer += f" (as {info['writer_seen_from']} sees it)"
    rows.append(("writer", writer))
    processing = {True: "on", False: "off", None: UNKNOWN}[info["processing"]]
    if info["processing_state"]:
        processing += f" (mapping {info['processing_state']})"
    rows.append(("processing", processing))
    r = info["readiness"]
    verdict = r["verdict"]
    if r["measured_at"]:
        verdict += f", measured {r['measured_at']}"
    if r["age_seconds"] is not None:
        verdict += f" ({_seconds(r['age_seconds'])} ago)"
    rows.append(("readiness", verdict))
    rows.append(("reasons", ", ".join(r["reasons"]) or "-"))
    rows.append(("lag", "  ".join(f"{store} {_seconds(lag)}" for store, lag in r["lag_seconds"].items())))
    peer = info["peer"]
    healthy = {True: "healthy", False: "UNHEALTHY", None: "health unknown"}[peer["healthy"]]
    if peer["healthy"] is None and peer.get("probed") is False:
        healthy += " (not probed)"
    age = peer["heartbeat_age_seconds"]
    heartbeat = "heartbeat unknown" if age is None else f"heartbeat {_seconds(age)} old"
    rows.append(("peer", f"{peer['region'] or '?'}: {healthy}, {heartbeat}"))
    rows += [("error", e) for e in info["errors"]]
    return rows


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: UNKNOWN}[value]


def _seconds(value: float | None) -> str:
    if value is None:
        return UNKNOWN
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"
