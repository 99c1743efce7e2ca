"""Serving: the SageMaker inference handlers, the local endpoint, ImagePredictor, deployment.

Importing this package is cheap: ``ImagePredictor`` (which imports the SageMaker SDK) loads on
first use, so the local server and the handlers never import the SDK.
"""

from __future__ import annotations

import logging
import os
from typing import Any

# Set before any module of this package imports the SageMaker SDK: the project uses SDK v2 on
# purpose (its v3 deprecation notice is noise here), and the SDK logs at INFO on import that
# it found no defaults file.
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
if logging.getLogger("sagemaker.config").level == logging.NOTSET:
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)

__all__ = ["ImagePredictor"]


def __getattr__(name: str) -> Any:
    if name == "ImagePredictor":
        from bincount.serving.predictor import ImagePredictor

        return ImagePredictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
