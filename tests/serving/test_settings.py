"""The serving commands' settings: what a bad value of each says (key, value, what was expected),
and the handlers' fallback limits (for a model deployed by hand) equal the config's."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.serving import handlers
from bincount.serving.settings import (
    DeleteSettings,
    DeploySettings,
    PredictSettings,
    ServeSettings,
    limits_from_cfg,
)

ROLE = "arn:aws:iam::123456789012:role/bincount-sagemaker"


def test_the_handlers_fallback_limits_are_the_configs(make_cfg: Callable[..., DictConfig]) -> None:
    configured = limits_from_cfg(make_cfg(name="serve", tiny=False).limits)
    assert configured == handlers.Limits(
        handlers.FALLBACK_MAX_REQUEST_BYTES, handlers.FALLBACK_MAX_IMAGE_PIXELS,
        handlers.FALLBACK_MAX_IMAGE_SIDE, handlers.FALLBACK_MAX_ASPECT_RATIO,
        handlers.FALLBACK_DECODE_SIDE,
    )


def test_serve_settings_are_typed_with_null_threads_for_every_core(
    make_cfg: Callable[..., DictConfig],
) -> None:
    settings = ServeSettings.from_cfg(make_cfg(
        "model_dir=/models/m", "serve.log_level=WARNING", "serve.batching.max_wait_ms=2",
        "limits.max_request_bytes=1000", name="serve", tiny=False,
    ))
    assert settings.model_dir == Path("/models/m")
    assert settings.torch_threads is None
    assert settings.log_level == "warning"
    assert settings.max_wait_ms == 2.0
    assert settings.limits.max_request_bytes == 1000
    assert settings.tta == "none"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("serve.port=http", "serve.port: expected an integer >= 0, got 'http'"),
        ("serve.batching.max_batch_size=0",
         "serve.batching.max_batch_size: expected an integer >= 1, got 0"),
        ("serve.torch_threads=-2", "serve.torch_threads: expected an integer >= 1, got -2"),
        ("serve.batching.enabled=maybe", "serve.batching.enabled: expected true or false, got "
                                         "'maybe'"),
        ("serve.batching.max_wait_ms=-1", "serve.batching.max_wait_ms: expected a number >= 0, "
                                          "got -1"),
        ("serve.graceful_shutdown_s=soon", "serve.graceful_shutdown_s: expected a number >= 0, "
                                           "got 'soon'"),
        ("serve.log_level=loud", "serve.log_level: expected one of critical, error, warning, "
                                 "info, debug, trace, got 'loud'"),
        ("limits.max_request_bytes=5MB", "limits.max_request_bytes: expected an integer >= 1, "
                                         "got '5MB'"),
        ("limits.max_image_pixels=0", "limits.max_image_pixels: expected an integer >= 1, got 0"),
        ("limits.max_aspect_ratio=0.5", "limits.max_aspect_ratio: expected a number >= 1, "
                                        "got 0.5"),
        ("limits.decode_side=big", "limits.decode_side: expected an integer >= 1, got 'big'"),
        ("serve.docs=yes", "serve.docs: expected true or false, got 'yes'"),
        ("serve.queue.max_requests=0", "serve.queue.max_requests: expected an integer >= 1, "
                                       "got 0"),
        ("serve.timeouts.body_s=0", "serve.timeouts.body_s: expected a number >= 0.001, got 0"),
        ("serve.timeouts.request_s=inf", "serve.timeouts.request_s: expected a number >= 0.001, "
                                         "got inf"),
        ("tta=vflip", "tta: expected one of none, hflip, got 'vflip'"),
        ("tta=null", "tta: expected one of none, hflip, got None"),
    ],
)
def test_bad_serve_settings_name_their_key(
    make_cfg: Callable[..., DictConfig], override: str, message: str
) -> None:
    cfg = make_cfg("model_dir=/models/m", override, name="serve", tiny=False)
    with pytest.raises(BincountError, match=re.escape(message)):
        ServeSettings.from_cfg(cfg)


def deploy_cfg(make_cfg: Callable[..., DictConfig], *overrides: str) -> DictConfig:
    return make_cfg("model_dir=/models/m", f"deploy.role={ROLE}", "deploy.bucket=models",
                    *overrides, name="deploy", tiny=False)


def test_deploy_settings_strip_the_prefix_and_leave_unset_values_none(
    make_cfg: Callable[..., DictConfig],
) -> None:
    settings = DeploySettings.from_cfg(deploy_cfg(make_cfg, "deploy.prefix=/a/b/"))
    assert (settings.prefix, settings.region, settings.endpoint_name) == ("a/b", None, None)
    assert settings.instance_count == 1 and settings.wait is True


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("deploy.role=null", "deploy.role is required: the ARN of the IAM role"),
        ("deploy.bucket=''", "deploy.bucket is required: the S3 bucket"),
        ("model_dir=null", "model_dir is required: the exported model directory to deploy"),
        ("deploy.instance_count=0", "deploy.instance_count: expected an integer >= 1, got 0"),
        ("deploy.wait=yes", "deploy.wait: expected true or false, got 'yes'"),
        ("tta=both", "tta: expected one of none, hflip, got 'both'"),
    ],
)
def test_bad_deploy_settings_name_their_key(
    make_cfg: Callable[..., DictConfig], override: str, message: str
) -> None:
    with pytest.raises(BincountError, match=re.escape(message)):
        DeploySettings.from_cfg(deploy_cfg(make_cfg, override))


def test_deleting_needs_only_the_endpoint_name(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("deploy.delete=true", "deploy.endpoint_name=ep", name="deploy", tiny=False)
    assert DeleteSettings.from_cfg(cfg) == DeleteSettings(endpoint_name="ep", region=None)
    cfg = make_cfg("deploy.delete=true", name="deploy", tiny=False)
    with pytest.raises(BincountError, match="deploy.endpoint_name is required: the endpoint"):
        DeleteSettings.from_cfg(cfg)


@pytest.mark.parametrize(
    ("overrides", "source"),
    [
        (["model_dir=/models/m"], "/models/m"),
        (["predict.url=http://127.0.0.1:8080"], "http://127.0.0.1:8080"),
        (["predict.endpoint=ep", "predict.region=eu-west-1"], "endpoint ep"),
    ],
)
def test_predict_takes_one_source_and_names_it(
    make_cfg: Callable[..., DictConfig], overrides: list[str], source: str
) -> None:
    settings = PredictSettings.from_cfg(
        make_cfg("images=a.jpg", *overrides, name="predict", tiny=False)
    )
    assert settings.source == source
    assert settings.images == ["a.jpg"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["images=[a.jpg]"], "give exactly one of model_dir=<dir>, predict.endpoint="),
        (["images=[a.jpg]", "predict.url=http://127.0.0.1:9", "predict.endpoint=x"],
         "; got predict.endpoint, predict.url"),
        (["images=[]", "model_dir=/m"], "images is empty: give image files or directories"),
        (["images=[a.jpg]", "model_dir=/m", "predict.batch_size=0"],
         "predict.batch_size: expected an integer >= 1, got 0"),
    ],
)
def test_bad_predict_settings_are_named(
    make_cfg: Callable[..., DictConfig], overrides: list[str], message: str
) -> None:
    with pytest.raises(BincountError, match=re.escape(message)):
        PredictSettings.from_cfg(make_cfg(*overrides, name="predict", tiny=False))
