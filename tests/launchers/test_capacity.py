"""What the region and the account offer: the instance type, its training image, its GPUs,
and the account's quota (Service Quotas under moto, seeded with SageMaker's quotas)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.launchers.capacity import check_instance_type, check_quota
from bincount.launchers.settings import LauncherSettings
from tests.support.aws import REGION, fake_credentials, moto_bucket, with_settings


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_credentials(monkeypatch)


def settings(cfg: DictConfig, *dotlist: str) -> LauncherSettings:
    return LauncherSettings.from_cfg(with_settings(cfg, *dotlist))


def test_the_default_instance_type_and_image_pass(job_cfg: DictConfig) -> None:
    check_instance_type(settings(job_cfg))
    check_instance_type(settings(job_cfg, "launcher.instance_count=2"))  # GPUs: DDP


@pytest.mark.parametrize(("dotlist", "message"), [
    (["launcher.instance_type=ml.g4dn.xlargee"],
     "launcher.instance_type: 'ml.g4dn.xlargee' is not a SageMaker training instance type. "
     "Did you mean ml.g4dn.xlarge"),
    (["launcher.instance_type=ml.m5.xlarge", "launcher.instance_count=2"],
     "launcher.instance_count: 2 instances of ml.m5.xlarge, which has no GPU"),
    (["launcher.framework_version=1.0.0"],
     "launcher.framework_version: no SageMaker PyTorch training image for 1.0.0/py312"),
])
def test_what_the_region_lacks_is_named(job_cfg: DictConfig, dotlist: list[str],
                                        message: str) -> None:
    with pytest.raises(BincountError, match=re.escape(message)):
        check_instance_type(settings(job_cfg, *dotlist))


@pytest.fixture
def quotas(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, float]]:
    """moto's Service Quotas knows only VPC quotas: the region's SageMaker ones are seeded."""
    from moto.servicequotas.models import ServiceQuotasBackend

    seeded: dict[str, float] = {}

    def listing(self: Any, service_code: str) -> list[dict[str, Any]]:
        return [{"ServiceCode": "sagemaker", "ServiceName": "Amazon SageMaker",
                 "QuotaArn": f"arn:aws:servicequotas:{REGION}::sagemaker/L-{i:08X}",
                 "QuotaCode": f"L-{i:08X}", "QuotaName": name, "Value": value, "Unit": "None",
                 "Adjustable": True, "GlobalQuota": False}
                for i, (name, value) in enumerate(seeded.items())]

    monkeypatch.setattr(ServiceQuotasBackend, "list_aws_default_service_quotas", listing)
    monkeypatch.setattr(ServiceQuotasBackend, "get_service_quota",
                        lambda self, service_code, quota_code: next(
                            q for q in listing(self, service_code)
                            if q["QuotaCode"] == quota_code))
    with moto_bucket(monkeypatch):
        yield seeded


@pytest.mark.parametrize(("seeded", "dotlist", "message"), [
    ({"ml.m5.xlarge for training job usage": 20.0, "ml.g5.xlarge for training job usage": 2.0},
     [], "launcher.instance_type: ml.g4dn.xlarge is not offered for SageMaker training jobs in "
     "us-east-1. Choose another launcher.region, or a type offered there (e.g. ml.g5.xlarge"),
    ({"ml.g4dn.xlarge for training job usage": 0.0}, [],
     "your account's quota 'ml.g4dn.xlarge for training job usage' is 0 in us-east-1, the job "
     "needs 1"),
    ({"ml.g4dn.xlarge for training job usage": 4.0,
      "ml.g4dn.xlarge for spot training job usage": 1.0},
     ["launcher.spot=true", "launcher.instance_count=2"],
     "quota 'ml.g4dn.xlarge for spot training job usage' is 1 in us-east-1, the job needs 2"),
])
def test_an_instance_type_the_region_or_the_account_lacks_is_named(
    job_cfg: DictConfig, quotas: dict[str, float], seeded: dict[str, float], dotlist: list[str],
    message: str,
) -> None:
    quotas.update(seeded)
    with pytest.raises(BincountError, match=re.escape(message)):
        check_quota(boto3.Session(region_name=REGION), settings(job_cfg, *dotlist))


def test_a_quota_that_covers_the_job_passes(job_cfg: DictConfig,
                                           quotas: dict[str, float]) -> None:
    quotas["ml.g4dn.xlarge for training job usage"] = 2.0
    check_quota(boto3.Session(region_name=REGION), settings(job_cfg, "launcher.instance_count=2"))


def test_quotas_that_cannot_be_read_are_a_warning_not_a_stop(
    job_cfg: DictConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    with moto_bucket(monkeypatch):  # moto has no SageMaker quotas: NoSuchResourceException
        check_quota(boto3.Session(region_name=REGION), settings(job_cfg))
    assert "could not check that ml.g4dn.xlarge is offered in us-east-1" in caplog.text
