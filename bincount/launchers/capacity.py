"""What the region and the account offer a job: the instance type, its PyTorch training image,
its GPUs, and (where Service Quotas can be read) the account's quota for it.

The type and the image are checked from botocore's and the SDK's own data (no network); the
quota needs a session. Each mistake names ``launcher.<key>`` and stops before any upload.
"""

from __future__ import annotations

import difflib
import logging
from typing import TYPE_CHECKING

from bincount.aws import quiet_sdk
from bincount.launchers.settings import LauncherSettings, fail

if TYPE_CHECKING:
    import boto3

log = logging.getLogger(__name__)


def training_instance_types() -> list[str]:
    """Every instance type CreateTrainingJob accepts (botocore's service model)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("TrainingInstanceType").enum)


def gpu_count(instance_type: str, region: str) -> int:
    quiet_sdk()
    from sagemaker import instance_types_gpu_info

    return int(instance_types_gpu_info.retrieve(region).get(instance_type, {}).get("Count", 0))


def check_instance_type(settings: LauncherSettings) -> None:
    """The type exists, the PyTorch training image exists for it in the region, and several
    instances have GPUs (distributed training needs them)."""
    quiet_sdk()
    from sagemaker import image_uris

    it, region = settings.instance_type, settings.region
    known = training_instance_types()
    if it not in known:
        close = difflib.get_close_matches(it, known, n=3)
        raise fail("instance_type", f"{it!r} is not a SageMaker training instance type",
                   f"Did you mean {' or '.join(close)}?" if close else
                   "See https://aws.amazon.com/sagemaker/pricing/ for the types")
    versions = f"{settings.framework_version}/{settings.py_version}"
    try:
        image_uris.retrieve("pytorch", region=region, version=settings.framework_version,
                            py_version=settings.py_version, instance_type=it,
                            image_scope="training")
    except ValueError as err:
        raise fail("framework_version", f"no SageMaker PyTorch training image for {versions} "
                   f"on {it} in {region} ({err})", "Pick a framework_version/py_version pair "
                   "the SDK lists, or another launcher.region") from err
    if settings.instance_count > 1 and gpu_count(it, region) == 0:
        raise fail("instance_count", f"{settings.instance_count} instances of {it}, which "
                   "has no GPU", "Distributed training (torch_distributed) needs GPU instances: "
                   "pick e.g. launcher.instance_type=ml.g4dn.xlarge, or launcher.instance_count=1")


def check_quota(boto_session: boto3.Session, settings: LauncherSettings) -> None:
    """Where Service Quotas can be read: the region offers the type for training, and the
    account's quota covers the instance count."""
    from botocore.exceptions import BotoCoreError, ClientError

    instance_type, region = settings.instance_type, settings.region
    usage = "spot training job usage" if settings.spot else "training job usage"
    wanted = f"{instance_type} for {usage}"
    client = boto_session.client("service-quotas", region_name=region)
    try:
        pages = client.get_paginator("list_aws_default_service_quotas").paginate(
            ServiceCode="sagemaker")
        quotas = {q["QuotaName"]: q for page in pages for q in page["Quotas"]}
    except (ClientError, BotoCoreError) as err:
        log.warning("could not check that %s is offered in %s (Service Quotas: %s)",
                    instance_type, region, err)
        return
    offered = sorted(n.removesuffix(f" for {usage}") for n in quotas if n.endswith(f" for {usage}"))
    if not offered:
        return  # the list does not describe training instances: nothing to check against
    if wanted not in quotas:
        close = difflib.get_close_matches(instance_type, offered, n=3, cutoff=0.5)
        raise fail("instance_type", f"{instance_type} is not offered for SageMaker "
                   f"{usage.removesuffix(' usage')}s in {region}",
                   f"Choose another launcher.region, or a type offered there"
                   f"{' (e.g. ' + ', '.join(close) + ')' if close else ''}")
    code = quotas[wanted]["QuotaCode"]
    try:
        applied = client.get_service_quota(ServiceCode="sagemaker",
                                           QuotaCode=code)["Quota"]["Value"]
    except (ClientError, BotoCoreError) as err:
        log.warning("could not read your quota for %s in %s: %s", wanted, region, err)
        return
    if applied < settings.instance_count:
        raise fail("instance_type", f"your account's quota '{wanted}' is {applied:g} in "
                   f"{region}, the job needs {settings.instance_count}",
                   "Request an increase in the Service Quotas console (Amazon SageMaker, quota "
                   f"code {code}) or pick another instance type")
