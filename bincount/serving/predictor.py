"""``ImagePredictor``: a SageMaker ``Predictor`` that sends JPEG bytes and returns the JSON dict.

It talks to a SageMaker endpoint, or to the local endpoint (``ImagePredictor.for_url``) through
the same ``sagemaker-runtime`` client pointed at ``http://127.0.0.1:8080``. An expected count
(reconciliation) travels as SageMaker's ``CustomAttributes`` (``expected=3``):
``predictor.predict(jpeg, expected=3)`` answers with ``expected``, ``p_expected`` and ``verdict``.
"""

from __future__ import annotations

from typing import Any

from bincount.aws import make_session, quiet_sdk

quiet_sdk()  # before the SDK's first import: this module subclasses its Predictor

from sagemaker.deserializers import JSONDeserializer  # noqa: E402
from sagemaker.predictor import Predictor  # noqa: E402
from sagemaker.serializers import IdentitySerializer  # noqa: E402
from sagemaker.session import Session  # noqa: E402

# The endpoint name the local server is called by on the runtime path (any name works).
LOCAL_ENDPOINT = "local"


class ImagePredictor(Predictor):
    """``predictor.predict(jpeg_bytes)`` -> ``{"count", "probabilities", "model"}``;
    ``predictor.predict(jpeg_bytes, expected=3)`` adds ``expected``, ``p_expected``, ``verdict``.
    """

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

    def predict(self, data: Any, *args: Any, expected: int | None = None, **kwargs: Any) -> Any:
        """The SDK's ``predict``; ``expected`` joins ``custom_attributes`` as ``expected=<n>``."""
        if expected is not None:
            if isinstance(expected, bool) or not isinstance(expected, int):
                raise TypeError(f"expected: an integer count, got {expected!r}")
            given = kwargs.get("custom_attributes")
            kwargs["custom_attributes"] = \
                f"{given},expected={expected}" if given else f"expected={expected}"
        return super().predict(data, *args, **kwargs)

    @classmethod
    def for_url(cls, url: str, content_type: str = "image/jpeg") -> ImagePredictor:
        """A predictor for the local endpoint at ``url`` (``scripts/serve.py``)."""
        return cls(LOCAL_ENDPOINT, make_session(runtime_url=url), content_type=content_type)
