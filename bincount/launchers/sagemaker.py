"""``launcher=sagemaker``: run ``train(cfg)`` as a SageMaker training job on the same code and
config (SDK v2 PyTorch estimator, script mode).

The job runs ``scripts/train.py`` from a staged source bundle (see ``bundle``) in the SageMaker
PyTorch training image. The user's Hydra overrides travel as hyperparameters, one per key, and
the container side (see ``container``) turns them back into the same overrides. Everything the
job writes goes under ``<output_path>/<job name>/``: ``output/model.tar.gz`` (the exported
model), ``output/output.tar.gz`` (metrics.json, the resolved config, the log), ``source/``,
``checkpoints/`` (synced during the run; a spot restart resumes from ``last.ckpt``) and
``tensorboard/``.

Every mistake a user can make in the launcher settings or the overrides is reported before
anything is uploaded. ``prepare`` is what the SageMaker HyperparameterTuner wraps too.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

# Imported first: it sets up the SDK's environment (v2 on purpose, quiet config logging).
from bincount.aws import make_session  # isort: skip
from sagemaker import image_uris, instance_types_gpu_info
from sagemaker.debugger import TensorBoardOutputConfig
from sagemaker.exceptions import UnexpectedStatusException
from sagemaker.pytorch import PyTorch
from sagemaker.session import Session
from sagemaker.utils import name_from_base

from bincount.errors import BincountError, expect_bool, expect_int
from bincount.files import write_json_atomic
from bincount.launchers import container
from bincount.launchers.bundle import Bundle, container_requirements, project_root, stage_bundle
from bincount.launchers.debugger import debugger_kwargs, debugger_requirements
from bincount.report import print_results

log = logging.getLogger(__name__)
# The SDK announces telemetry on every call even when it is off (as here); botocore logs every
# endpoint it resolves when AWS_ENDPOINT_URL is set.
for _name in ("sagemaker.telemetry.telemetry_logging", "botocore.configprovider"):
    logging.getLogger(_name).setLevel(logging.WARNING)

ENTRY_POINT = "scripts/train.py"
CONFIG_NAME = "train"
DEFAULT_METRICS = ("train_loss", "val_loss", "val_acc")
# Override keys (and their children) that stay on this side: the launcher's own settings,
# Hydra's, and the locations, which the container sets from SM_* variables.
LOCAL_ONLY = ("launcher", "hydra", "paths")

# CreateTrainingJob limits: at most 100 hyperparameters, keys up to 256 characters, values
# up to 2500. The SDK adds its own sagemaker_* ones (program, submit directory, log level,
# job name, region, distribution): room is kept for them.
MAX_HYPERPARAMETERS = 100
SDK_HYPERPARAMETERS = 8
MAX_KEY_LENGTH = 256
MAX_VALUE_LENGTH = 2500
RESERVED_PREFIX = "sagemaker_"

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?$")
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
CHANNEL = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")


# ---------------------------------------------------------------- overrides -> hyperparameters


def task_overrides() -> list[str]:
    """The command line's overrides (empty outside a Hydra app)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def _split(override: str) -> tuple[str, str]:
    """``"++a.b=1"`` -> ``("++a.b", "1")``; ``"~c"`` -> ``("~c", "")``."""
    key, _, value = override.partition("=")
    return key, value


def job_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that travel to the job (not launcher.*, hydra.*, paths.*)."""
    kept, dropped = [], []
    for override in overrides:
        key = container.override_key(override)
        top = re.split(r"[./@]", key, maxsplit=1)[0]
        if top not in LOCAL_ONLY:
            kept.append(override)
        elif top != "launcher":
            dropped.append(override)
    if dropped:
        log.info("not sent to the job (the container sets its own locations): %s",
                 " ".join(dropped))
    return kept


def to_hyperparameters(overrides: Sequence[str]) -> dict[str, str]:
    """One hyperparameter per override: its key (with any ``+``/``++``/``~`` prefix) -> its
    value as typed. Checked against SageMaker's limits."""
    try:
        OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise BincountError(f"override: {err}") from err
    hyperparameters: dict[str, str] = {}
    for override in overrides:
        key, value = _split(override)
        if container.override_key(override).startswith(RESERVED_PREFIX):
            raise BincountError(f"override {override!r}: keys starting with "
                                f"{RESERVED_PREFIX!r} are reserved by SageMaker")
        if len(key) > MAX_KEY_LENGTH:
            raise BincountError(f"override {override!r}: SageMaker allows hyperparameter names "
                                f"of at most {MAX_KEY_LENGTH} characters")
        # The SDK sends every value JSON-encoded; the limit applies to what is sent.
        sent = len(json.dumps(value))
        if sent > MAX_VALUE_LENGTH:
            raise BincountError(f"override {key}: SageMaker allows hyperparameter values of at "
                                f"most {MAX_VALUE_LENGTH} characters, this one has {sent}")
        hyperparameters[key] = value
    room = MAX_HYPERPARAMETERS - SDK_HYPERPARAMETERS
    if len(hyperparameters) > room:
        raise BincountError(f"{len(hyperparameters)} overrides: a SageMaker job takes at most "
                            f"{room} (100 hyperparameters, some used by the SDK); move some into "
                            "a config file (conf/experiment/<name>.yaml) and select it")
    return hyperparameters


def check_overrides(overrides: Sequence[str]) -> DictConfig:
    """Compose the training config with ``overrides`` as the container will: an override of a
    key that does not exist stops here, before anything is uploaded."""
    try:
        if GlobalHydra.instance().is_initialized():  # inside scripts/train.py's Hydra app
            return compose(CONFIG_NAME, overrides=list(overrides))
        with initialize_config_dir(str(project_root() / "conf"), version_base="1.3"):
            return compose(CONFIG_NAME, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise BincountError(f"the overrides do not compose the training config: {err}") from err


# --------------------------------------------------------------------------- settings checks


def _fail(key: str, problem: str, fix: str) -> BincountError:
    return BincountError(f"launcher.{key}: {problem}. {fix}")


@dataclass(frozen=True)
class Settings:
    """``cfg.launcher``, checked."""

    role: str
    region: str
    instance_type: str
    instance_count: int
    volume_size: int
    inputs: dict[str, str]
    output_path: str | None
    spot: bool
    max_run: int
    max_wait: int | None
    keep_alive_period: int | None
    job_name: str | None
    tags: dict[str, str] = field(default_factory=dict)


def check_s3_uri(key: str, uri: Any) -> str:
    if not isinstance(uri, str) or not S3_URI.match(uri):
        raise _fail(key, f"{uri!r} is not an S3 URI",
                    "Give it as s3://<bucket>/<prefix> (a bucket in the job's region)")
    return uri.rstrip("/")


def check_settings(launcher: DictConfig, cfg: DictConfig, region: str | None) -> Settings:
    role = launcher.get("role")
    if not role:
        raise _fail("role", "no IAM role given",
                    "Set launcher.role=arn:aws:iam::<account id>:role/<name> (or SAGEMAKER_ROLE): "
                    "a role SageMaker can assume, with access to your bucket (see the README)")
    if not ROLE_ARN.match(str(role)):
        raise _fail("role", f"{role!r} is not an IAM role ARN",
                    "Give the full ARN, arn:aws:iam::<12-digit account id>:role/<name> "
                    "(aws iam get-role --role-name <name> --query Role.Arn)")
    if not region:
        raise _fail("region", "no AWS region",
                    "Set launcher.region=us-east-1 (or AWS_DEFAULT_REGION)")
    regions = sagemaker_regions()
    if region not in regions:
        close = difflib.get_close_matches(str(region), regions, n=3)
        raise _fail("region", f"{region!r} is not a region with SageMaker",
                    f"Did you mean {' or '.join(close)}?" if close else
                    "Set launcher.region to one that has it, e.g. us-east-1")

    inputs = {}
    for channel, uri in (launcher.get("inputs") or {}).items():
        if uri is None:
            continue
        if not CHANNEL.match(str(channel)):
            raise _fail(f"inputs.{channel}", "not a valid channel name",
                        "Use letters, digits, '.', '-' and '_' (at most 64)")
        inputs[str(channel)] = check_s3_uri(f"inputs.{channel}", uri)
    data = cfg.get("data") or {}
    if data.get("synthetic") is None and container.TRAIN_CHANNEL not in inputs:
        raise _fail("inputs.train", "no training data given",
                    "Set launcher.inputs.train=s3://<bucket>/<prefix> to a prepared ABID set "
                    "(python scripts/prepare_data.py prepare.upload_to=s3://<bucket>/<prefix>), "
                    "or train on rendered bins with data=synthetic")
    if data.get("cache"):
        raise BincountError("data.cache=true reads a preprocessed cache on this machine, which "
                            "a SageMaker job does not have: leave data.cache=false for "
                            "launcher=sagemaker")

    output_path = launcher.get("output_path")
    if output_path is not None:
        output_path = check_s3_uri("output_path", output_path)

    instance_count = expect_int("launcher.instance_count", launcher.instance_count, 1)
    spot = expect_bool("launcher.spot", launcher.spot)
    max_run = expect_int("launcher.max_run", launcher.max_run, 1)
    max_wait = launcher.get("max_wait") if spot else None
    if max_wait is not None:
        max_wait = expect_int("launcher.max_wait", max_wait, 1)
    if spot and max_wait is None:
        raise _fail("max_wait", "spot training needs max_wait",
                    f"Set launcher.max_wait to at least max_run ({max_run} s)")
    if max_wait is not None and max_wait < max_run:
        raise _fail("max_wait", f"{max_wait} s is less than max_run ({max_run} s)",
                    "Spot jobs wait for capacity within max_wait: make it >= max_run")
    keep_alive = launcher.get("keep_alive_period")
    if keep_alive is not None and spot:
        raise _fail("keep_alive_period", "warm pools do not work with spot instances",
                    "Set launcher.keep_alive_period=null or launcher.spot=false")

    job_name = launcher.get("job_name")
    if job_name is not None and not JOB_NAME.match(str(job_name)):
        raise _fail("job_name", f"{job_name!r} is not a valid training job name",
                    "Use at most 63 letters, digits and hyphens, starting with a letter or digit")
    return Settings(
        role=str(role), region=str(region), instance_type=str(launcher.instance_type),
        instance_count=instance_count,
        volume_size=expect_int("launcher.volume_size", launcher.volume_size, 1),
        inputs=inputs, output_path=output_path, spot=spot,
        max_run=max_run, max_wait=max_wait,
        keep_alive_period=(expect_int("launcher.keep_alive_period", keep_alive, 1)
                           if keep_alive is not None else None),
        job_name=str(job_name) if job_name else None,
        tags={str(k): str(v) for k, v in (launcher.get("tags") or {}).items()},
    )


def sagemaker_regions() -> list[str]:
    """The regions botocore's endpoint data lists for SageMaker, in every partition."""
    session = boto3.Session()
    return sorted(r for p in session.get_available_partitions()
                  for r in session.get_available_regions("sagemaker", partition_name=p))


def training_instance_types() -> list[str]:
    """Every instance type CreateTrainingJob accepts (botocore's service model)."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("TrainingInstanceType").enum)


def gpu_count(instance_type: str, region: str) -> int:
    return int(instance_types_gpu_info.retrieve(region).get(instance_type, {}).get("Count", 0))


def check_instance_type(launcher: DictConfig, settings: Settings) -> None:
    """The type exists, and the PyTorch training image exists for it in the region."""
    it, region = settings.instance_type, settings.region
    known = training_instance_types()
    if it not in known:
        close = difflib.get_close_matches(it, known, n=3)
        raise _fail("instance_type", f"{it!r} is not a SageMaker training instance type",
                    f"Did you mean {' or '.join(close)}?" if close else
                    "See https://aws.amazon.com/sagemaker/pricing/ for the types")
    try:
        image_uris.retrieve("pytorch", region=region, version=str(launcher.framework_version),
                            py_version=str(launcher.py_version), instance_type=it,
                            image_scope="training")
    except ValueError as err:
        raise _fail("framework_version", f"no SageMaker PyTorch training image for "
                    f"{launcher.framework_version}/{launcher.py_version} on {it} in {region} "
                    f"({err})", "Pick a framework_version/py_version pair the SDK lists, "
                    "or another launcher.region") from err
    if settings.instance_count > 1 and gpu_count(it, region) == 0:
        raise _fail("instance_count", f"{settings.instance_count} instances of {it}, which "
                    "has no GPU", "Distributed training (torch_distributed) needs GPU instances: "
                    "pick e.g. launcher.instance_type=ml.g4dn.xlarge, or launcher.instance_count=1")


def check_quota(session: Session, settings: Settings) -> None:
    """Where Service Quotas can be read: the region offers the type for training, and the
    account's quota covers the instance count."""
    _check_quota(session.boto_session, settings.instance_type, settings.region,
                 settings.instance_count, settings.spot)


def _check_quota(boto_session: boto3.Session, instance_type: str, region: str, count: int,
                 spot: bool) -> None:
    usage = "spot training job usage" if spot else "training job usage"
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
        raise _fail("instance_type", f"{instance_type} is not offered for SageMaker "
                    f"{usage.removesuffix(' usage')}s in {region}",
                    f"Choose another launcher.region, or a type offered there"
                    f"{' (e.g. ' + ', '.join(close) + ')' if close else ''}")
    try:
        applied = client.get_service_quota(ServiceCode="sagemaker",
                                           QuotaCode=quotas[wanted]["QuotaCode"])["Quota"]["Value"]
    except (ClientError, BotoCoreError) as err:
        log.warning("could not read your quota for %s in %s: %s", wanted, region, err)
        return
    if applied < count:
        raise _fail("instance_type", f"your account's quota '{wanted}' is {applied:g} in "
                    f"{region}, the job needs {count}",
                    "Request an increase in the Service Quotas console (Amazon SageMaker, quota "
                    f"code {quotas[wanted]['QuotaCode']}) or pick another instance type")


# ------------------------------------------------------------------------------ the estimator


@dataclass
class Job:
    """A training job, prepared and (after ``submit``) submitted."""

    estimator: PyTorch
    name: str
    region: str
    inputs: dict[str, str]
    base_uri: str  # <output_path>: everything of the job is under <base_uri>/<name>/
    bundle: Bundle
    hyperparameters: dict[str, str]

    @property
    def prefix(self) -> str:
        return f"{self.base_uri}/{self.name}"

    @property
    def console_url(self) -> str:
        return (f"https://{self.region}.console.aws.amazon.com/sagemaker/home?region="
                f"{self.region}#/jobs/{self.name}")

    def locations(self) -> dict[str, str]:
        return {
            "console": self.console_url,
            "model": f"{self.prefix}/output/model.tar.gz",
            "output": f"{self.prefix}/output/output.tar.gz",
            "checkpoints": str(self.estimator.checkpoint_s3_uri),
            "tensorboard": f"tensorboard --logdir {self.prefix}/tensorboard",
        }


# How SageMaker reads the ``<name>=<float>`` lines the MetricLines callback prints.
METRIC_REGEX = r"{name}=([-+0-9.eE]+|nan|inf)"


def metric_definitions(names: Sequence[str]) -> list[dict[str, str]]:
    return [{"Name": name, "Regex": METRIC_REGEX.format(name=name)} for name in names]


def metric_names(cfg: DictConfig) -> list[str]:
    callback = (cfg.get("callbacks") or {}).get("metric_lines") or {}
    return list(callback.get("names") or DEFAULT_METRICS)


def build_estimator(
    cfg: DictConfig,
    hyperparameters: Mapping[str, str],
    settings: Settings,
    source_dir: str,
    base_uri: str,
    job_name: str,
    session: Session,
) -> PyTorch:
    """The PyTorch estimator of one job (all locations under ``<base_uri>/<job_name>/``)."""
    launcher = cfg.launcher
    distributed = settings.instance_count > 1 or gpu_count(settings.instance_type,
                                                           settings.region) > 1
    tensorboard = None
    if launcher.get("tensorboard", True):
        tensorboard = TensorBoardOutputConfig(
            s3_output_path=f"{base_uri}/{job_name}/tensorboard",
            container_local_output_path=container.tensorboard_dir(),
        )
    return PyTorch(
        entry_point=ENTRY_POINT,
        source_dir=source_dir,
        role=settings.role,
        instance_type=settings.instance_type,
        instance_count=settings.instance_count,
        volume_size=settings.volume_size,
        framework_version=str(launcher.framework_version),
        py_version=str(launcher.py_version),
        hyperparameters=dict(hyperparameters),
        metric_definitions=metric_definitions(metric_names(cfg)),
        distribution={"torch_distributed": {"enabled": True}} if distributed else None,
        output_path=base_uri,
        code_location=base_uri,
        checkpoint_s3_uri=launcher.get("checkpoint_s3_uri") or f"{base_uri}/{job_name}/checkpoints",
        checkpoint_local_path=container.checkpoint_dir(),
        tensorboard_output_config=tensorboard,
        use_spot_instances=settings.spot,
        max_run=settings.max_run,
        max_wait=settings.max_wait,
        keep_alive_period_in_seconds=settings.keep_alive_period,
        tags=[{"Key": k, "Value": v} for k, v in settings.tags.items()] or None,
        base_job_name=str(launcher.base_job_name),
        sagemaker_session=session,
        # SageMaker Debugger rules, hook and profiler when launcher.debugger.enabled, else off.
        **debugger_kwargs(launcher.get("debugger")),
    )


def _region(launcher: DictConfig, session: Session | None) -> str | None:
    if session is not None:
        return session.boto_region_name
    return launcher.get("region") or boto3.Session().region_name


@contextmanager
def prepare(
    cfg: DictConfig,
    overrides: Sequence[str],
    session: Session | None = None,
    job_name: str | None = None,
) -> Iterator[Job]:
    """Check everything, stage the bundle and build the estimator; the bundle's staging
    directory lives until the context exits (submit, or wrap in a tuner, inside it)."""
    overrides = job_overrides(overrides)
    hyperparameters = to_hyperparameters(overrides)
    check_overrides(overrides)
    settings = check_settings(cfg.launcher, cfg, _region(cfg.launcher, session))
    check_instance_type(cfg.launcher, settings)
    try:
        session = session or make_session(region=settings.region)
        check_quota(session, settings)
        if settings.output_path:
            base_uri = settings.output_path
        else:
            base_uri = f"s3://{session.default_bucket()}/{cfg.launcher.default_prefix}".rstrip("/")
    except NoCredentialsError as err:
        raise BincountError("no AWS credentials: configure them (aws configure, AWS_PROFILE or "
                            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)") from err
    name = job_name or settings.job_name or name_from_base(str(cfg.launcher.base_job_name))
    requirements = None
    if cfg.launcher.get("install_requirements", True):
        requirements = container_requirements(cfg.launcher.get("requirements_exclude") or ())
        requirements += debugger_requirements(cfg.launcher.get("debugger"))
    with tempfile.TemporaryDirectory(prefix="bincount-bundle-") as tmp:
        bundle = stage_bundle(Path(tmp) / "source", requirements)
        estimator = build_estimator(cfg, hyperparameters, settings, str(bundle.root), base_uri,
                                    name, session)
        yield Job(estimator=estimator, name=name, region=settings.region,
                  inputs=settings.inputs, base_uri=base_uri, bundle=bundle,
                  hyperparameters=hyperparameters)


def submit(cfg: DictConfig, overrides: Sequence[str], session: Session | None = None) -> Job:
    """Stage, upload and start the job; returns at once."""
    with prepare(cfg, overrides, session) as job:
        print(f"{job.bundle.describe()} -> {job.prefix}/source/sourcedir.tar.gz", flush=True)
        try:
            job.estimator.fit(job.inputs or None, job_name=job.name, wait=False)
        except NoCredentialsError as err:
            raise BincountError("no AWS credentials: configure them (aws configure, AWS_PROFILE "
                                "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)") from err
        except ClientError as err:
            raise BincountError(f"SageMaker refused the training job: {err}") from err
    print(f"SageMaker training job: {job.name}", flush=True)
    for what, where in job.locations().items():
        print(f"  {what}: {where}", flush=True)
    return job


# ------------------------------------------------------------------------- after the job


def _s3_parts(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _download_and_unpack(s3: Any, uri: str, dest: Path) -> bool:
    """Unpack the tar.gz at ``uri`` into ``dest`` (replaced whole); False if it is not there."""
    bucket, key = _s3_parts(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        archive = Path(tmp) / "archive.tar.gz"
        try:
            s3.download_file(bucket, key, str(archive))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
        if dest.exists():
            shutil.rmtree(dest)
        unpacked.rename(dest)
    return True


def follow(job_name: str, session: Session, output_dir: Path, model_dir: Path,
           logs: bool = True, poll: int = 10) -> dict[str, Any]:
    """Wait for the job (streaming its logs), then unpack its model into ``model_dir`` and its
    output (metrics.json, resolved config, log) into ``<output_dir>/job``; print the metrics."""
    try:
        if logs:
            session.logs_for_job(job_name, wait=True, poll=poll)
        else:
            session.wait_for_job(job_name, poll=poll)
    except UnexpectedStatusException as err:
        raise BincountError(f"training job {job_name} did not complete: {err}") from err
    desc = session.sagemaker_client.describe_training_job(TrainingJobName=job_name)
    if desc["TrainingJobStatus"] != "Completed":
        raise BincountError(f"training job {job_name} ended {desc['TrainingJobStatus']}: "
                            f"{desc.get('FailureReason', 'no reason given')}")
    s3 = session.boto_session.client("s3")
    model_uri = desc["ModelArtifacts"]["S3ModelArtifacts"]
    if not _download_and_unpack(s3, model_uri, model_dir):
        raise BincountError(f"training job {job_name} completed but left no model at {model_uri}")
    output_uri = model_uri.rsplit("/", 1)[0] + "/output.tar.gz"
    job_dir = output_dir / "job"
    metrics: dict[str, Any] = {}
    if _download_and_unpack(s3, output_uri, job_dir) and (job_dir / "metrics.json").is_file():
        metrics = json.loads((job_dir / "metrics.json").read_text())
        write_json_atomic(output_dir / "metrics.json", metrics)
    final = {m["MetricName"]: m["Value"] for m in desc.get("FinalMetricDataList", [])}
    summary = {"job_name": job_name, "status": desc["TrainingJobStatus"],
               "model_artifact": model_uri, "final_metrics": final}
    previous = output_dir / "job.json"
    known = json.loads(previous.read_text()) if previous.is_file() else {}
    write_json_atomic(previous, {**known, **summary})
    if metrics:
        print_results(metrics, {"model": model_dir, "job output": job_dir,
                                "metrics": output_dir / "metrics.json"})
    for name, value in final.items():
        print(f"final {name}={value}", flush=True)
    return {**summary, "metrics": metrics}


class SageMakerLauncher:
    """Built from ``cfg.launcher``; ``run`` reads its settings there."""

    def __init__(self, **_: Any) -> None:
        pass

    def run(self, cfg: DictConfig, session: Session | None = None) -> dict[str, Any]:
        job = submit(cfg, task_overrides(), session)
        result: dict[str, Any] = {"job_name": job.name, **job.locations()}
        # where the job is, for later (aws sagemaker describe-training-job, the console)
        write_json_atomic(Path(cfg.paths.output_dir) / "job.json", result)
        if cfg.launcher.wait:
            result.update(follow(job.name, job.estimator.sagemaker_session,
                                 Path(cfg.paths.output_dir), Path(cfg.paths.model_dir),
                                 logs=bool(cfg.launcher.logs)))
        return result
