"""One region, deployed the way the twin deploys each of its two, for the integration tests and the bench.

It is the twin's own building block: a region endpoint (:class:`tandem.twin.regions.RegionEndpoint`), one
PostgreSQL server as the writer, and the same provisioning from the templates - the ``global-primary``
stack without a peer, then the ``primary`` app stack - with samconfig's parameter values. Functions are
registered as in the twin but not given workers: a test runs a handler in-process (``function_env`` +
:func:`tandem.lambda_runtime.load_handler`), which is the one in-process path, kept for tests that need to
see inside an invocation.
"""

from __future__ import annotations

import functools
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from tandem.lambda_runtime import LambdaContext, load_handler
from tandem.localpg import LocalPostgres, free_port
from tandem.template import GLOBAL_TEMPLATE, Template, TemplateError, load
from tandem.twin.aurora import install_aurora_builtins
from tandem.twin.custom_resources import CustomResources, Invoke
from tandem.twin.endpoints import READER_HOST, WRITER_HOST, ClusterEndpoints

if TYPE_CHECKING:
    from tandem.twin.lambdas import LambdaService


@functools.cache
def _session() -> boto3.session.Session:
    """One session for every emulator client: a session per client costs ~0.1 s of loading botocore data."""
    return boto3.session.Session()


def emulator_client(service: str, region: str, endpoint: str) -> Any:
    """A boto3 client for one emulated region (the emulator accepts any credentials; these are fixed)."""
    return _session().client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - the emulator's fixed test credentials
        config=Config(retries={"max_attempts": 2}),
    )


def ledger_table_keys() -> dict[str, Any]:
    """The DynamoDB global table's key schema, as infra_global/template.yaml declares it (for moto-only tests)."""
    tables = [r for r in load(GLOBAL_TEMPLATE)["Resources"].values() if r.get("Type") == "AWS::DynamoDB::GlobalTable"]
    if len(tables) != 1:
        raise TemplateError(f"{GLOBAL_TEMPLATE} must declare exactly one AWS::DynamoDB::GlobalTable")
    props = tables[0]["Properties"]
    return {"AttributeDefinitions": props["AttributeDefinitions"], "KeySchema": props["KeySchema"]}


@dataclass
class RegionResources:
    """What a client of the region reads: the deployed names and URLs (from the stacks, never re-derived)."""

    table: str
    bucket: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    secret_arn: str


@dataclass
class LocalRegion:
    """A running local region. Build it with :func:`local_region`."""

    region: str
    endpoint: str
    postgres: LocalPostgres
    template: Template  # the app stack's template, resolved as deployed
    resources: RegionResources
    environments: dict[str, dict[str, str]]
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = emulator_client(service, self.region, self.endpoint)
        return self._clients[service]

    def function_env(self, function: str) -> dict[str, str]:
        """The environment Lambda would give ``function`` in this region (template + runtime variables)."""
        return dict(self.environments[function])


class _OneWriter:
    """The Aurora side of a one-region deployment: its only cluster is this server, behind the same endpoints as
    the twin's (IAM database authentication at login, :mod:`tandem.twin.endpoints`), both always active."""

    def __init__(self, server: LocalPostgres) -> None:
        self._server = server
        self.endpoints: ClusterEndpoints | None = None

    def attach_cluster(self, region: str, props: dict[str, Any]) -> tuple[str, str, int]:
        server = self._server
        user, password = props.get("MasterUsername"), props.get("MasterUserPassword")
        if user and password:
            server.ensure_superuser(str(user), str(password))
        install_aurora_builtins(server)
        if self.endpoints is None:
            assert server.base_dir is not None
            tls = server.data_dir
            self.endpoints = ClusterEndpoints(
                server.port, server.base_dir / "writer.endpoint", region, tls / "server.crt", tls / "server.key"
            )
            self.endpoints.open(True)
            self.endpoints.start()
        return WRITER_HOST, READER_HOST, server.port

    def stop(self) -> None:
        if self.endpoints is not None:
            self.endpoints.stop()


def _in_process(lambdas: LambdaService) -> Invoke:
    """Invoke a function in this process, as the integration tests run handlers (what a custom resource needs)."""

    def invoke(region: str, function: str, event: dict[str, Any]) -> dict[str, Any]:
        env = lambdas.environments[(region, function)]
        with function_environment(env):
            handler = load_handler(function)
            context = LambdaContext(env["AWS_LAMBDA_FUNCTION_NAME"], region, timeout_s=180.0)
            try:
                return {"ok": True, "result": handler(event, context)}
            except Exception as exc:  # a handler's exception is its invoker's reply, as Lambda reports it
                return {"ok": False, "errorType": type(exc).__name__, "errorMessage": str(exc)}

    return invoke


def _no_workers(region: str, function: str, _event: dict[str, Any]) -> dict[str, Any]:
    """A one-region setup runs handlers in-process only (see the module docstring)."""
    return {"ok": False, "errorType": "NoWorker", "errorMessage": f"{function} has no worker in {region}"}


@contextmanager
def local_region(region: str = "us-east-1") -> Iterator[LocalRegion]:
    """Start PostgreSQL and the region's endpoint, deploy both stacks, yield; stop both on the way out."""
    from tandem.twin.extensions import cloudformation, cloudwatch_alarms, event_routing, secrets_rotation
    from tandem.twin.ingress import Ingress
    from tandem.twin.lambdas import LambdaService
    from tandem.twin.provision import Region
    from tandem.twin.regions import RegionEndpoint
    from tandem.twin.stacks import deploy_one_region

    endpoint = RegionEndpoint(region, free_port())
    server = LocalPostgres()
    writer = _OneWriter(server)
    endpoint.start()
    try:
        # moto keeps its state per process, not per server: start every local region from a clean slate.
        urllib.request.urlopen(f"{endpoint.url}/moto-api/reset", data=b"", timeout=10).close()  # noqa: S310
        event_routing.install()  # moto itself never consumes a queue for a mapping
        cloudwatch_alarms.install()  # PutCompositeAlarm, which moto lacks (the template has a composite alarm)
        secrets_rotation.install()  # the master secret's hosted rotation (infra_global), run on RotateSecret
        server.start()
        clients: dict[str, Any] = {}

        def client(service: str) -> Any:
            return clients.setdefault(service, emulator_client(service, region, endpoint.url))

        lambdas = LambdaService(None, lambda _r: endpoint.url)
        ingress = Ingress(region, free_port(), _no_workers, client, lambda arn: lambdas.function_of(region, arn))
        here = Region(region, client, databases=writer)
        custom = CustomResources(_in_process(lambdas), lambdas.function_of)
        creators = {**lambdas.creators(), **ingress.creators(), **custom.creators()}
        cloudformation.install(lambda _region: (here, creators))
        app = deploy_one_region(here, database_port=server.port, database_ca=str(server.ca_file))
        tpl = app.template
        resources = RegionResources(
            table=str(tpl.parameter("LedgerTableName")), bucket=str(tpl.parameter("ArchiveBucketName")),
            queue_url=app.ref("TransactionQueue"), queue_arn=str(app.physical["TransactionQueue"]["Arn"]),
            dlq_url=app.ref("TransactionDLQ"), secret_arn=str(tpl.parameter("LedgerDbSecretArn")),
        )  # fmt: skip
        environments = {fn: env for (_r, fn), env in lambdas.environments.items()}
        yield LocalRegion(region, endpoint.url, server, tpl, resources, environments)
    finally:
        cloudformation.uninstall()
        writer.stop()
        server.stop()
        ingress.stop()
        endpoint.stop()


@contextmanager
def function_environment(env: dict[str, str]) -> Iterator[None]:
    """Run a block with os.environ set as Lambda would set it, restoring it afterwards."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
