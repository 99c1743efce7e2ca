"""Serving: the SageMaker inference handlers, the local endpoint, ImagePredictor, deployment.

Importing this package has no side effects and is cheap: ``ImagePredictor`` (which imports the
SageMaker SDK) loads on first use, so the local server and the handlers never import the SDK.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ImagePredictor"]


def __getattr__(name: str) -> Any:
    if name == "ImagePredictor":  # by name: model.tar.gz ships the handlers' imports, not this
        return importlib.import_module("bincount.serving.predictor").ImagePredictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
