"""``ImagePredictor``: a SageMaker ``Predictor`` that sends JPEG bytes and returns the JSON dict.

It talks to a SageMaker endpoint, or to the local endpoint (``ImagePredictor.for_url``) through
the same ``sagemaker-runtime`` client pointed at ``http://127.0.0.1:8080``.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from sagemaker.deserializers import JSONDeserializer
from sagemaker.predictor import Predictor
from sagemaker.serializers import IdentitySerializer
from sagemaker.session import Session

# SDK defaults config that turns the SageMaker SDK's usage telemetry off.
TELEMETRY_OFF: dict[str, Any] = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}
# The endpoint name the local server is called by on the runtime path (any name works).
LOCAL_ENDPOINT = "local"


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
    if boto_session is None:
        boto_session = boto3.Session(region_name=region)
        if boto_session.region_name is None:
            boto_session = boto3.Session(region_name="us-east-1")
    runtime = None
    if runtime_url is not None:
        runtime = boto_session.client(
            "sagemaker-runtime",
            endpoint_url=runtime_url,
            config=Config(signature_version=UNSIGNED, retries={"mode": "standard"}),
        )
    return Session(
        boto_session=boto_session, sagemaker_runtime_client=runtime, sagemaker_config=TELEMETRY_OFF
    )


class ImagePredictor(Predictor):
    """``predictor.predict(jpeg_bytes)`` -> ``{"count", "probabilities", "model"}``."""

    def __init__(
        self,
        endpoint_name: str,
        sagemaker_session: Session | None = None,
        content_type: str = "image/jpeg",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            endpoint_name,
            sagemaker_session=sagemaker_session or make_session(),
            serializer=IdentitySerializer(content_type=content_type),
            deserializer=JSONDeserializer(),
            **kwargs,
        )

    @classmethod
    def for_url(cls, url: str, content_type: str = "image/jpeg") -> ImagePredictor:
        """A predictor for the local endpoint at ``url`` (``scripts/serve.py``)."""
        return cls(LOCAL_ENDPOINT, make_session(runtime_url=url), content_type=content_type)
