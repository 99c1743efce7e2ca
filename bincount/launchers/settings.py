"""``cfg.launcher`` for ``launcher=sagemaker``, checked once: ``LauncherSettings.from_cfg``.

Every mistake a user can make in the launcher settings stops here with the key, the value and
what was expected, before anything is uploaded (``capacity`` then checks the instance type
against what the region and the account offer). No network: the regions come from botocore's
endpoint data.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from bincount.aws import S3_URI
from bincount.errors import BincountError, expect_bool, expect_int
from bincount.launchers.container import TRAIN_CHANNEL

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
CHANNEL = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")
# Settings that are integers (at least 1) and switches (true or false).
COUNTS = ("instance_count", "volume_size", "max_run")
SWITCHES = ("spot", "tensorboard", "wait", "logs", "install_requirements")


def fail(key: str, problem: str, fix: str) -> BincountError:
    return BincountError(f"launcher.{key}: {problem}. {fix}")


def _s3_uri(key: str, uri: Any) -> str:
    if not isinstance(uri, str) or not S3_URI.match(uri):
        raise fail(key, f"{uri!r} is not an S3 URI",
                   "Give it as s3://<bucket>/<prefix> (a bucket in the job's region)")
    return uri.rstrip("/")


def _optional(launcher: Mapping[str, Any], key: str, least: int = 1) -> int | None:
    value = launcher.get(key)
    return None if value is None else expect_int(f"launcher.{key}", value, least)


@dataclass(frozen=True)
class LauncherSettings:
    """How a SageMaker training job runs: ``cfg.launcher``, checked and typed."""

    role: str
    region: str
    instance_type: str
    instance_count: int
    volume_size: int
    framework_version: str
    py_version: str
    inputs: dict[str, str]  # channel -> s3:// URI
    output_path: str | None  # None: the SDK's default bucket, under default_prefix
    default_prefix: str
    spot: bool
    max_run: int
    max_wait: int | None  # spot only
    keep_alive_period: int | None
    checkpoint_s3_uri: str | None  # None: <output_path>/<job name>/checkpoints
    tensorboard: bool
    tags: dict[str, str]
    base_job_name: str
    job_name: str | None
    wait: bool
    logs: bool
    install_requirements: bool
    requirements_exclude: tuple[str, ...]
    debugger: dict[str, Any]

    @classmethod
    def from_cfg(cls, cfg: DictConfig, region: str | None = None) -> LauncherSettings:
        """Check ``cfg.launcher`` (and the data settings a job cannot use); ``region``, when
        given (a session's), wins over ``launcher.region`` and the AWS default."""
        launcher = cast(dict[str, Any], OmegaConf.to_container(cfg.launcher, resolve=True))
        role = _role(launcher.get("role"))
        region = _region(region or launcher.get("region") or _default_region())
        inputs = _inputs(launcher.get("inputs") or {})
        data = cfg.get("data") or {}
        if data.get("synthetic") is None and TRAIN_CHANNEL not in inputs:
            raise fail("inputs.train", "no training data given",
                       "Set launcher.inputs.train=s3://<bucket>/<prefix> to a prepared ABID set "
                       "(python scripts/prepare_data.py prepare.upload_to=s3://<bucket>/<prefix>)"
                       ", or train on rendered bins with data=synthetic")
        output_path = launcher.get("output_path")
        counts = {k: expect_int(f"launcher.{k}", launcher[k], 1) for k in COUNTS}
        switches = {k: expect_bool(f"launcher.{k}", launcher[k]) for k in SWITCHES}
        spot, max_run = switches["spot"], counts["max_run"]
        max_wait = _optional(launcher, "max_wait") if spot else None
        if spot and max_wait is None:
            raise fail("max_wait", "spot training needs max_wait",
                       f"Set launcher.max_wait to at least max_run ({max_run} s)")
        if max_wait is not None and max_wait < max_run:
            raise fail("max_wait", f"{max_wait} s is less than max_run ({max_run} s)",
                       "Spot jobs wait for capacity within max_wait: make it >= max_run")
        keep_alive = _optional(launcher, "keep_alive_period")
        if keep_alive is not None and spot:
            raise fail("keep_alive_period", "warm pools do not work with spot instances",
                       "Set launcher.keep_alive_period=null or launcher.spot=false")
        job_name = launcher.get("job_name")
        if job_name is not None and not JOB_NAME.match(str(job_name)):
            raise fail("job_name", f"{job_name!r} is not a valid training job name",
                       "Use at most 63 letters, digits and hyphens, starting with a letter or "
                       "digit")
        checkpoints = launcher.get("checkpoint_s3_uri")
        debugger = dict(launcher.get("debugger") or {})
        debugger["enabled"] = expect_bool("launcher.debugger.enabled",
                                          debugger.get("enabled", False))
        return cls(
            role=role, region=region, instance_type=str(launcher["instance_type"]),
            framework_version=str(launcher["framework_version"]),
            py_version=str(launcher["py_version"]), inputs=inputs,
            output_path=None if output_path is None else _s3_uri("output_path", output_path),
            default_prefix=str(launcher["default_prefix"]), max_wait=max_wait,
            keep_alive_period=keep_alive,
            checkpoint_s3_uri=_s3_uri("checkpoint_s3_uri", checkpoints) if checkpoints else None,
            tags={str(k): str(v) for k, v in (launcher.get("tags") or {}).items()},
            base_job_name=str(launcher["base_job_name"]),
            job_name=str(job_name) if job_name else None,
            requirements_exclude=tuple(map(str, launcher.get("requirements_exclude") or ())),
            debugger=debugger, **counts, **switches,
        )


def _role(role: Any) -> str:
    if not role:
        raise fail("role", "no IAM role given",
                   "Set launcher.role=arn:aws:iam::<account id>:role/<name> (or SAGEMAKER_ROLE): "
                   "a role SageMaker can assume, with access to your bucket (see the README)")
    if not ROLE_ARN.match(str(role)):
        raise fail("role", f"{role!r} is not an IAM role ARN",
                   "Give the full ARN, arn:aws:iam::<12-digit account id>:role/<name> "
                   "(aws iam get-role --role-name <name> --query Role.Arn)")
    return str(role)


def _default_region() -> str | None:
    import boto3

    return boto3.Session().region_name


@functools.cache
def sagemaker_regions() -> list[str]:
    """The regions botocore's endpoint data lists for SageMaker, in every partition."""
    import boto3

    session = boto3.Session()
    return sorted(r for p in session.get_available_partitions()
                  for r in session.get_available_regions("sagemaker", partition_name=p))


def _region(region: Any) -> str:
    if not region:
        raise fail("region", "no AWS region",
                   "Set launcher.region=us-east-1 (or AWS_DEFAULT_REGION)")
    regions = sagemaker_regions()
    if region not in regions:
        close = difflib.get_close_matches(str(region), regions, n=3)
        raise fail("region", f"{region!r} is not a region with SageMaker",
                   f"Did you mean {' or '.join(close)}?" if close else
                   "Set launcher.region to one that has it, e.g. us-east-1")
    return str(region)


def _inputs(channels: Mapping[str, Any]) -> dict[str, str]:
    inputs = {}
    for channel, uri in channels.items():
        if uri is None:
            continue
        if not CHANNEL.match(str(channel)):
            raise fail(f"inputs.{channel}", "not a valid channel name",
                       "Use letters, digits, '.', '-' and '_' (at most 64)")
        inputs[str(channel)] = _s3_uri(f"inputs.{channel}", uri)
    return inputs
