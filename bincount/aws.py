"""AWS plumbing shared by data upload, the SageMaker launcher, the tuner and deployment:
S3 URIs and SageMaker SDK sessions. Importing this module has no side effects; the SDK is
imported when a session is made."""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Any

from bincount.errors import BincountError

if TYPE_CHECKING:
    import boto3
    from sagemaker.session import Session

S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?$")
# The SDK's config lookup: telemetry off, nothing read from a user's defaults file.
TELEMETRY_OFF = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {
    "TelemetryOptOut": True}}}}


def parse_s3_uri(uri: object, key: str = "uri") -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")`` (no trailing slash);
    anything else is refused naming ``key``."""
    match = S3_URI.match(str(uri))
    if not match:
        raise BincountError(f"{key}: expected s3://<bucket>/<prefix>, got {uri!r}")
    return match.group(1), (match.group(2) or "").strip("/")


def quiet_sdk() -> None:
    """Before the SageMaker SDK is imported: the project uses SDK v2 on purpose (its v3
    deprecation notice is noise here), and the SDK logs at INFO that it found no defaults
    file. Called by the functions that import the SDK, never at import time."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    if logging.getLogger("sagemaker.config").level == logging.NOTSET:
        logging.getLogger("sagemaker.config").setLevel(logging.WARNING)


def make_session(
    region: str | None = None,
    runtime_url: str | None = None,
    boto_session: boto3.Session | None = None,
) -> Session:
    """A SageMaker SDK session with telemetry off.

    ``runtime_url`` points its ``sagemaker-runtime`` client at another endpoint (the local
    server), unsigned, so no AWS credentials are needed for it. ``boto_session`` is used as
    given (its region wins); else one is made for ``region`` (default: the AWS default,
    then us-east-1).
    """
    quiet_sdk()
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from sagemaker.session import Session

    if boto_session is None:
        boto_session = boto3.Session(region_name=region)
        if boto_session.region_name is None:
            boto_session = boto3.Session(region_name="us-east-1")
    runtime: Any = None
    if runtime_url is not None:
        runtime = boto_session.client(
            "sagemaker-runtime",
            endpoint_url=runtime_url,
            config=Config(signature_version=UNSIGNED, retries={"mode": "standard"}),
        )
    return Session(
        boto_session=boto_session, sagemaker_runtime_client=runtime, sagemaker_config=TELEMETRY_OFF
    )
