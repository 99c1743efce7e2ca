"""The settings of the serving commands, typed and checked in one place.

``scripts/serve.py``, ``scripts/deploy.py`` and ``scripts/predict.py`` each build theirs from
the composed config (``conf/serve.yaml``, ``conf/deploy.yaml``, ``conf/predict.yaml``, with
``conf/limits/default.yaml``); a bad value stops the command with its key, the value and what
was expected (a :class:`BincountError`: exit 2). The defaults live in the YAML only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bincount.aws import parse_s3_uri
from bincount.errors import BincountError, expect_bool, expect_int
from bincount.serving.handlers import Limits
from bincount.serving.runtimes import CHOICES, TTA_CHOICES

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's


def expect_number(key: str, value: object, least: float) -> float:
    """``value`` as a float when it is a number >= ``least``; else a BincountError."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value < least):
        raise BincountError(f"{key}: expected a number >= {least}, got {value!r}")
    return float(value)


def optional_text(value: object) -> str | None:
    """None for an unset value (null or ''), else the value as text."""
    return None if value in (None, "") else str(value)


def required(key: str, value: object, what: str) -> str:
    text = optional_text(value)
    if text is None:
        raise BincountError(f"{key} is required: {what}")
    return text


def runtime_choice(key: str, value: object) -> str:
    """``serve.runtime`` & co.: auto, torch, onnx or int8."""
    text = str(value).strip().lower()
    if text not in CHOICES:
        raise BincountError(f"{key}: expected one of {', '.join(CHOICES)}, got {value!r}")
    return text


def tta_choice(key: str, value: object) -> str:
    """The top-level ``tta``: none or hflip (the mean over the image and its mirror)."""
    text = str(value).strip().lower()
    if value is None or text not in TTA_CHOICES:
        raise BincountError(f"{key}: expected one of {', '.join(TTA_CHOICES)}, got {value!r}")
    return text


def limits_from_cfg(limits: Mapping[str, Any]) -> Limits:
    """``cfg.limits`` (conf/limits/default.yaml): the request limits of the handlers."""
    return Limits(
        max_request_bytes=expect_int("limits.max_request_bytes", limits["max_request_bytes"], 1),
        max_image_pixels=expect_int("limits.max_image_pixels", limits["max_image_pixels"], 1),
        max_image_side=expect_int("limits.max_image_side", limits["max_image_side"], 1),
        max_aspect_ratio=expect_number(
            "limits.max_aspect_ratio", limits["max_aspect_ratio"], 1),
        decode_side=expect_int("limits.decode_side", limits["decode_side"], 1),
    )


@dataclass(frozen=True)
class ServeSettings:
    """``scripts/serve.py``: ``model_dir``, ``cfg.serve`` and ``cfg.limits``."""

    model_dir: Path
    host: str
    port: int  # 0: any free port
    log_level: str
    runtime: str  # auto, torch, onnx or int8
    tta: str  # none or hflip
    torch_threads: int | None  # the runtime's intra-op threads; None: every usable core
    batching: bool
    max_batch_size: int
    max_wait_ms: float
    graceful_shutdown_s: float
    docs: bool  # /docs, /redoc and /openapi.json
    max_requests: int  # admitted at once; one more gets 503 + Retry-After
    decode_threads: int
    header_timeout_s: float
    body_timeout_s: float
    request_timeout_s: float
    keep_alive_s: float
    retry_after_s: int
    limits: Limits
    metrics: bool  # GET /metrics
    capture_dir: Path | None  # None: data capture off
    capture_sampling: float
    capture_max_queue: int

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> ServeSettings:
        serve, batching = cfg.serve, cfg.serve.batching
        queue, timeouts = serve.queue, serve.timeouts
        log_level = str(serve.log_level).lower()
        if log_level not in LOG_LEVELS:
            raise BincountError(
                f"serve.log_level: expected one of {', '.join(LOG_LEVELS)}, "
                f"got {serve.log_level!r}"
            )
        threads = serve.torch_threads
        return cls(
            model_dir=Path(required("model_dir", cfg.model_dir, "an exported model directory")),
            host=required("serve.host", serve.host, "the address to listen on"),
            port=expect_int("serve.port", serve.port, 0),
            log_level=log_level,
            runtime=runtime_choice("serve.runtime", serve.runtime),
            tta=tta_choice("tta", cfg.get("tta")),
            torch_threads=None if threads is None else expect_int(
                "serve.torch_threads", threads, 1),
            batching=expect_bool("serve.batching.enabled", batching.enabled),
            max_batch_size=expect_int(
                "serve.batching.max_batch_size", batching.max_batch_size, 1),
            max_wait_ms=expect_number("serve.batching.max_wait_ms", batching.max_wait_ms, 0),
            graceful_shutdown_s=expect_number(
                "serve.graceful_shutdown_s", serve.graceful_shutdown_s, 0),
            docs=expect_bool("serve.docs", serve.docs),
            max_requests=expect_int("serve.queue.max_requests", queue.max_requests, 1),
            decode_threads=expect_int("serve.queue.decode_threads", queue.decode_threads, 1),
            retry_after_s=expect_int("serve.queue.retry_after_s", queue.retry_after_s, 1),
            header_timeout_s=expect_number("serve.timeouts.header_s", timeouts.header_s, 0.001),
            body_timeout_s=expect_number("serve.timeouts.body_s", timeouts.body_s, 0.001),
            request_timeout_s=expect_number(
                "serve.timeouts.request_s", timeouts.request_s, 0.001),
            keep_alive_s=expect_number("serve.timeouts.keep_alive_s", timeouts.keep_alive_s, 0),
            limits=limits_from_cfg(cfg.limits),
            metrics=expect_bool("serve.metrics", serve.metrics),
            capture_dir=capture_dir(serve.capture),
            capture_sampling=sampling("serve.capture.sampling", serve.capture.sampling),
            capture_max_queue=expect_int("serve.capture.max_queue", serve.capture.max_queue, 1),
        )


def sampling(key: str, value: object) -> float:
    """A fraction in (0, 1]."""
    fraction = expect_number(key, value, 0)
    if not 0 < fraction <= 1:
        raise BincountError(f"{key}: expected a fraction in (0, 1], got {value!r}")
    return fraction


def s3_uri(key: str, value: object) -> str | None:
    """An ``s3://bucket[/prefix]`` (checked, no trailing slash), or None when unset."""
    if optional_text(value) is None:
        return None
    bucket, prefix = parse_s3_uri(value, key)
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def percentage(key: str, value: object) -> int:
    """An integer percentage in [1, 100]."""
    number = expect_int(key, value, 1)
    if number > 100:
        raise BincountError(f"{key}: expected a percentage from 1 to 100, got {value!r}")
    return number


def capture_dir(capture: Mapping[str, Any]) -> Path | None:
    """``serve.capture.dir`` when ``serve.capture.enabled``, else None."""
    if not expect_bool("serve.capture.enabled", capture["enabled"]):
        return None
    return Path(required("serve.capture.dir", capture["dir"], "where captured requests go"))


@dataclass(frozen=True)
class DeploySettings:
    """``scripts/deploy.py``: ``model_dir``, ``cfg.deploy`` and ``cfg.limits``."""

    model_dir: Path
    role: str
    bucket: str
    prefix: str  # without slashes at either end; '' puts model.tar.gz at the bucket's root
    region: str | None
    endpoint_name: str | None  # None: <model name>-<version>-<UTC time>
    instance_type: str
    instance_count: int
    framework_version: str
    py_version: str
    runtime: str  # auto, torch, onnx or int8: what model.tar.gz carries and the endpoint runs
    tta: str  # none or hflip: the endpoint's BINCOUNT_TTA
    wait: bool
    limits: Limits
    data_capture: bool
    capture_s3_uri: str | None  # None: s3://<bucket>/<prefix>/<endpoint>/datacapture
    capture_sampling: int  # percent

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> DeploySettings:
        d = cfg.deploy
        return cls(
            model_dir=Path(required(
                "model_dir", cfg.get("model_dir"), "the exported model directory to deploy")),
            role=required(
                "deploy.role", d.role,
                "the ARN of the IAM role SageMaker assumes for the endpoint"),
            bucket=required("deploy.bucket", d.bucket, "the S3 bucket that receives model.tar.gz"),
            prefix=str(d.prefix or "").strip("/"),
            region=optional_text(d.region),
            endpoint_name=optional_text(d.endpoint_name),
            instance_type=required("deploy.instance_type", d.instance_type,
                                   "a SageMaker instance type, e.g. ml.m5.large"),
            instance_count=expect_int("deploy.instance_count", d.instance_count, 1),
            framework_version=required("deploy.framework_version", d.framework_version,
                                       "the SageMaker PyTorch inference image version"),
            py_version=required("deploy.py_version", d.py_version, "e.g. py312"),
            runtime=runtime_choice("deploy.runtime", d.runtime),
            tta=tta_choice("tta", cfg.get("tta")),
            wait=expect_bool("deploy.wait", d.wait),
            limits=limits_from_cfg(cfg.limits),
            data_capture=expect_bool("deploy.data_capture", d.data_capture),
            capture_s3_uri=s3_uri("deploy.capture_s3_uri", d.capture_s3_uri),
            capture_sampling=percentage("deploy.capture_sampling", d.capture_sampling),
        )


@dataclass(frozen=True)
class DeleteSettings:
    """``scripts/deploy.py deploy.delete=true``: the endpoint to tear down."""

    endpoint_name: str
    region: str | None

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> DeleteSettings:
        d = cfg.deploy
        return cls(
            endpoint_name=required("deploy.endpoint_name", d.endpoint_name,
                                   "the endpoint to delete"),
            region=optional_text(d.region),
        )


@dataclass(frozen=True)
class PredictSettings:
    """``scripts/predict.py``: the images, exactly one source, ``cfg.predict``, ``cfg.limits``."""

    images: list[str]
    model_dir: Path | None
    endpoint: str | None
    url: str | None
    region: str | None
    batch_size: int
    runtime: str  # with model_dir: auto, torch, onnx or int8
    limits: Limits

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> PredictSettings:
        p = cfg.predict
        sources = {
            "model_dir": optional_text(cfg.get("model_dir")),
            "predict.endpoint": optional_text(p.endpoint),
            "predict.url": optional_text(p.url),
        }
        given = [key for key, value in sources.items() if value is not None]
        if len(given) != 1:
            raise BincountError(
                "give exactly one of model_dir=<dir>, predict.endpoint=<SageMaker endpoint> or "
                f"predict.url=<http://host:port>; got {', '.join(given) or 'none'}"
            )
        images = [cfg.images] if isinstance(cfg.images, str) else list(cfg.images)
        if not images:
            raise BincountError("images is empty: give image files or directories, images=[a.jpg]")
        model_dir = sources["model_dir"]
        return cls(
            images=[str(image) for image in images],
            model_dir=None if model_dir is None else Path(model_dir),
            endpoint=sources["predict.endpoint"],
            url=sources["predict.url"],
            region=optional_text(p.region),
            batch_size=expect_int("predict.batch_size", p.batch_size, 1),
            runtime=runtime_choice("predict.runtime", p.runtime),
            limits=limits_from_cfg(cfg.limits),
        )

    @property
    def source(self) -> str:
        """What the predictions come from, as the table's title names it."""
        if self.model_dir is not None:
            return str(self.model_dir)
        return str(self.url) if self.url is not None else f"endpoint {self.endpoint}"
