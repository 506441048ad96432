"""IAM enforcement with real resource ARNs for DynamoDB, Secrets Manager and SQS requests.

With IAM access control on, moto 5.2.5 authorises every non-S3 request against the resource ``*``, so
a policy that names its table or secret (least privilege, as template.yaml writes them) is denied. Each
Response class may define ``_determine_resource``; we add it for the services our functions call, so
a function's policy statements can be proven against the requests its code actually makes.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from moto.dynamodb.responses import DynamoHandler
from moto.secretsmanager.responses import SecretsManagerResponse
from moto.sqs.responses import SQSResponse

from tandem import moto_ext


def _dynamodb_resource(self: Any) -> str:
    try:
        body = json.loads(self.body or "{}") if isinstance(self.body, str | bytes) else dict(self.body or {})
    except ValueError:
        return "*"
    table = body.get("TableName")
    if not table:
        return "*"  # multi-table actions (BatchWriteItem, TransactWriteItems) are checked against *
    return f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{table}"


def _secret_resource(self: Any) -> str:
    secret_id = self._get_param("SecretId")
    if not secret_id:
        return "*"
    try:
        return str(self.backend.describe_secret(secret_id).arn)
    except Exception:  # unknown secret: let the action itself answer ResourceNotFound (when permitted on *)
        return str(secret_id) if str(secret_id).startswith("arn:") else "*"


def _queue_resource(self: Any) -> str:
    url = self._get_param("QueueUrl")
    if not url:
        return "*"
    name = str(url).rstrip("/").rsplit("/", 1)[-1]
    return f"arn:aws:sqs:{self.region}:{self.current_account}:{name}"


@functools.cache
def install() -> None:
    moto_ext.apply()
    setattr(DynamoHandler, "_determine_resource", _dynamodb_resource)  # noqa: B010 - moto looks it up by name
    setattr(SecretsManagerResponse, "_determine_resource", _secret_resource)  # noqa: B010
    setattr(SQSResponse, "_determine_resource", _queue_resource)  # noqa: B010
