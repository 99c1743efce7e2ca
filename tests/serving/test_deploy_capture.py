"""``deploy.data_capture=true``: the endpoint config SageMaker receives captures requests and
responses to S3 (what ``scripts/monitor.py capture=s3://...`` reads)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.serving.deploy import deploy_model
from bincount.serving.settings import DeploySettings
from tests.serving.test_deploy import (  # noqa: F401 (fixtures)
    BUCKET,
    ENDPOINT,
    aws,
    captured_session,
    deploy_cfg,
)


@pytest.mark.slow  # the SDK's deploy (see test_deploy.py)
def test_data_capture_is_configured_on_the_endpoint(
    aws: None,  # noqa: F811
    captured_session: tuple[Any, dict[str, dict]],  # noqa: F811
    model_dir: Path,
    make_cfg: Callable[..., DictConfig],
) -> None:
    session, sent = captured_session
    deploy_model(deploy_cfg(make_cfg, f"model_dir={model_dir}", "deploy.runtime=torch",
                            "deploy.data_capture=true", "deploy.capture_sampling=20"), session)
    capture = sent["CreateEndpointConfig"]["DataCaptureConfig"]
    assert capture["EnableCapture"] is True
    assert capture["InitialSamplingPercentage"] == 20
    assert capture["DestinationS3Uri"] == f"s3://{BUCKET}/bincount/endpoints/{ENDPOINT}/datacapture"
    assert capture["CaptureOptions"] == [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]


def test_capture_settings_are_checked(make_cfg: Callable[..., DictConfig]) -> None:
    default = DeploySettings.from_cfg(deploy_cfg(make_cfg, "model_dir=m"))
    assert default.data_capture is False
    given = DeploySettings.from_cfg(deploy_cfg(
        make_cfg, "model_dir=m", "deploy.capture_s3_uri=s3://bkt/cap/"))
    assert given.capture_s3_uri == "s3://bkt/cap"
    for override, words in (("deploy.capture_sampling=101", "from 1 to 100, got 101"),
                            ("deploy.capture_s3_uri=/tmp/x", "deploy.capture_s3_uri: expected"),
                            ("deploy.data_capture=yes", "deploy.data_capture: expected true")):
        with pytest.raises(BincountError, match=words):
            DeploySettings.from_cfg(deploy_cfg(make_cfg, "model_dir=m", override))
