"""``cfg.launcher`` -> ``LauncherSettings``: typed values, and every mistake named with its key,
its value and what was expected (scripts print it and exit 2)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.launchers.settings import LauncherSettings
from tests.support.aws import OUTPUT, REGION, ROLE, TRAIN, fake_credentials, with_settings


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_credentials(monkeypatch)


def test_settings_are_typed_from_the_config(job_cfg: DictConfig) -> None:
    cfg = with_settings(job_cfg, "launcher.spot=true", "launcher.max_wait=90000",
                        "launcher.tags={team: ml, year: 2026}",
                        "launcher.inputs.extra=s3://more-bins/x/",
                        "launcher.checkpoint_s3_uri=s3://more-bins/old-job/checkpoints")

    settings = LauncherSettings.from_cfg(cfg)

    assert settings.role == ROLE and settings.region == REGION  # AWS_DEFAULT_REGION
    assert settings.inputs == {"train": TRAIN, "extra": "s3://more-bins/x"}
    assert settings.output_path == OUTPUT
    assert settings.spot is True and settings.max_wait == 90000
    assert settings.checkpoint_s3_uri == "s3://more-bins/old-job/checkpoints"
    assert settings.tags == {"team": "ml", "year": "2026"}
    assert settings.debugger["enabled"] is False
    # without spot, max_wait is not sent
    assert LauncherSettings.from_cfg(job_cfg).max_wait is None


def test_a_sessions_region_wins_over_the_setting(job_cfg: DictConfig) -> None:
    cfg = with_settings(job_cfg, "launcher.region=eu-west-1")
    assert LauncherSettings.from_cfg(cfg).region == "eu-west-1"
    assert LauncherSettings.from_cfg(cfg, region="us-west-2").region == "us-west-2"


MISTAKES = [
    (["launcher.role=null"], "launcher.role: no IAM role given. Set launcher.role=arn:aws:iam::"),
    (["launcher.role=my-sagemaker-role"], "'my-sagemaker-role' is not an IAM role ARN"),
    (["launcher.inputs.train=bincount-jobs/abid"],
     "launcher.inputs.train: 'bincount-jobs/abid' is not an S3 URI"),
    (["launcher.inputs.bad channel=s3://more-bins/x"],
     "launcher.inputs.bad channel: not a valid channel name"),
    (["launcher.output_path=/tmp/out"], "launcher.output_path: '/tmp/out' is not an S3 URI"),
    (["launcher.checkpoint_s3_uri=checkpoints"],
     "launcher.checkpoint_s3_uri: 'checkpoints' is not an S3 URI"),
    (["launcher.inputs.train=null"], "launcher.inputs.train: no training data given"),
    (["launcher.region=us-east-9"],
     "launcher.region: 'us-east-9' is not a region with SageMaker. Did you mean us-east-2 or "),
    (["launcher.instance_count=two"],
     "launcher.instance_count: expected an integer >= 1, got 'two'"),
    (["launcher.volume_size=0"], "launcher.volume_size: expected an integer >= 1, got 0"),
    (["launcher.max_run=1.5"], "launcher.max_run: expected an integer >= 1, got 1.5"),
    (["launcher.spot=sometimes"], "launcher.spot: expected true or false, got 'sometimes'"),
    (["launcher.wait=maybe"], "launcher.wait: expected true or false, got 'maybe'"),
    (["launcher.debugger.enabled=1"], "launcher.debugger.enabled: expected true or false, got 1"),
    (["launcher.spot=true", "launcher.max_wait=null"],
     "launcher.max_wait: spot training needs max_wait"),
    (["launcher.spot=true", "launcher.max_wait=60"],
     "launcher.max_wait: 60 s is less than max_run (86400 s)"),
    (["launcher.spot=true", "launcher.keep_alive_period=600"],
     "launcher.keep_alive_period: warm pools do not work with spot instances"),
    (["launcher.keep_alive_period=-5"],
     "launcher.keep_alive_period: expected an integer >= 1, got -5"),
    (["launcher.job_name=my_job"], "launcher.job_name: 'my_job' is not a valid training job name"),
]


@pytest.mark.parametrize(("settings", "message"), MISTAKES)
def test_mistakes_name_the_key_the_value_and_the_fix(
    job_cfg: DictConfig, settings: list[str], message: str,
) -> None:
    with pytest.raises(BincountError, match=re.escape(message)):
        LauncherSettings.from_cfg(with_settings(job_cfg, *settings))


def test_rendered_data_needs_no_input_channel(job_cfg: DictConfig) -> None:
    cfg = with_settings(job_cfg, "launcher.inputs.train=null", "data.synthetic={per_class: 4}")
    assert LauncherSettings.from_cfg(cfg).inputs == {}


def test_no_region_anywhere_is_a_clear_mistake(
    monkeypatch: pytest.MonkeyPatch, job_cfg: DictConfig, tmp_path: Path,
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(BincountError, match=r"launcher.region: no AWS region\. Set launcher"):
        LauncherSettings.from_cfg(job_cfg)
