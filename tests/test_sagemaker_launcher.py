"""Submitting with ``launcher=sagemaker`` under moto: the CreateTrainingJob request as sent
(botocore event hooks), the uploaded source bundle, and the mistakes that stop before anything
is uploaded."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from omegaconf import DictConfig
from packaging.requirements import Requirement
from sagemaker_training import mapping

from bincount.data.local_s3 import LocalS3
from bincount.errors import BincountError
from bincount.launchers.bundle import stage_bundle
from bincount.launchers.container import args_to_overrides
from bincount.launchers.sagemaker import metric_definitions, prepare, submit

from .conftest import ROOT
from .sagemaker_support import (
    BUCKET,
    OUTPUT,
    REGION,
    ROLE,
    TRAIN,
    decoded,
    fake_credentials,
    launch_cfg,
    moto_bucket,
    recording_session,
    reset_moto,
)

OVERRIDES = [
    "model.optimizer.lr=0.0023", "trainer.max_epochs=21", "data.batch_size=16",
    "data.counts=[1,2,3,4,5]", "++trainer.gradient_clip_val=1.0", "~callbacks.lr_monitor",
    "model.arch=resnet34",
]
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6.0-gpu-py312"


@pytest.fixture(scope="module")
def aws() -> Iterator[Any]:
    """moto for the whole module (starting it takes a while): the S3 client of its bucket."""
    with pytest.MonkeyPatch.context() as mp, moto_bucket(mp) as s3:
        yield s3


@pytest.fixture(scope="module")
def module_session(aws: Any) -> tuple[Any, dict[str, dict]]:
    """One recording SageMaker session for the module (each takes a second or two to make)."""
    return recording_session()


@pytest.fixture
def recorded(module_session: tuple[Any, dict[str, dict]], monkeypatch: pytest.MonkeyPatch
             ) -> tuple[Any, dict]:
    fake_credentials(monkeypatch)
    session, sent = module_session
    sent.clear()
    return session, sent


def objects(s3: Any) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


# The SDK validates its defaults config (telemetry off) on every lookup: a submission takes
# a few seconds.
def test_the_request_carries_image_code_overrides_data_checkpoints_spot_metrics_tensorboard(
    aws: Any, recorded: tuple[Any, dict], make_cfg: Callable[..., DictConfig],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = ["launcher.spot=true", "launcher.max_run=3600", "launcher.max_wait=7200",
                "launcher.volume_size=50", "launcher.tags={project: bincount, owner: ml}"]
    cfg = launch_cfg(make_cfg, OVERRIDES, *settings)
    # what Hydra reports as the command line's overrides: the launcher's and paths stay here
    command_line = ["launcher=sagemaker", f"launcher.role={ROLE}", *settings,
                    "paths.root_dir=/home/me/bincount", *OVERRIDES]
    session, sent = recorded

    job = submit(cfg, command_line, session)

    request = sent["CreateTrainingJob"]
    assert request["TrainingJobName"] == job.name and job.name.startswith("bincount-")
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert request["RoleArn"] == ROLE
    assert request["ResourceConfig"] == {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1,
                                         "VolumeSizeInGB": 50}
    hyperparameters = decoded(request["HyperParameters"])
    assert hyperparameters["sagemaker_program"] == "scripts/train.py"
    source = f"{OUTPUT}/{job.name}/source/sourcedir.tar.gz"
    assert hyperparameters["sagemaker_submit_directory"] == source
    assert "sagemaker_torch_distributed_enabled" not in hyperparameters
    user = {k: v for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}
    assert user == {"model.optimizer.lr": "0.0023", "trainer.max_epochs": "21",
                    "data.batch_size": "16", "data.counts": "[1,2,3,4,5]",
                    "++trainer.gradient_clip_val": "1.0", "~callbacks.lr_monitor": "",
                    "model.arch": "resnet34"}
    # round trip: the toolkit's --key value arguments -> the container's overrides
    assert sorted(args_to_overrides(mapping.to_cmd_args(user))) == sorted(OVERRIDES)

    (channel,) = request["InputDataConfig"]
    assert channel["ChannelName"] == "train"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == TRAIN
    assert request["OutputDataConfig"]["S3OutputPath"] == OUTPUT
    assert request["CheckpointConfig"] == {"S3Uri": f"{OUTPUT}/{job.name}/checkpoints",
                                           "LocalPath": "/opt/ml/checkpoints"}
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600,
                                            "MaxWaitTimeInSeconds": 7200}
    tensorboard = {"S3OutputPath": f"{OUTPUT}/{job.name}/tensorboard",
                   "LocalPath": "/opt/ml/output/tensorboard"}
    assert request["TensorBoardOutputConfig"] == tensorboard
    assert {"Key": "project", "Value": "bincount"} in request["Tags"]
    definitions = request["AlgorithmSpecification"]["MetricDefinitions"]
    assert definitions == metric_definitions(["train_loss", "val_loss", "val_acc"])
    for d in definitions:  # the lines MetricLines prints, each epoch and at the end
        assert re.search(d["Regex"], f"epoch=3 {d['Name']}=0.812345").group(1) == "0.812345"
    assert re.findall(definitions[1]["Regex"], "best val_loss=0.500000") == ["0.500000"]
    from sagemaker.config.config_schema import TELEMETRY_OPT_OUT_PATH  # after bincount.serving
    from sagemaker.utils import resolve_value_from_config

    assert resolve_value_from_config(config_path=TELEMETRY_OPT_OUT_PATH,
                                     sagemaker_session=job.estimator.sagemaker_session) is True

    out = capsys.readouterr().out
    assert f"SageMaker training job: {job.name}" in out
    assert f"https://{REGION}.console.aws.amazon.com/sagemaker/home?region={REGION}#/jobs/" \
           f"{job.name}" in out
    assert re.search(r"source bundle: \d+ files, \d+ KiB", out)
    source_key = f"runs/{job.name}/source/sourcedir.tar.gz"
    assert [k for k in objects(aws) if job.name in k] == [source_key]


def test_the_uploaded_bundle_is_the_package_configs_scripts_and_requirements(
    aws: Any, recorded: tuple[Any, dict], make_cfg: Callable[..., DictConfig],
) -> None:
    session, _ = recorded
    job = submit(launch_cfg(make_cfg, []), [], session)

    body = aws.get_object(Bucket=BUCKET, Key=f"runs/{job.name}/source/sourcedir.tar.gz")["Body"]
    with tarfile.open(fileobj=io.BytesIO(body.read()), mode="r:gz") as tar:
        files = {m.name for m in tar.getmembers() if m.isfile()}
        requirements = tar.extractfile("requirements.txt").read().decode().split()

    expected = {p.relative_to(ROOT).as_posix() for tree, pattern in
                (("bincount", "*.py"), ("conf", "*.yaml"), ("scripts", "*.py"))
                for p in (ROOT / tree).rglob(pattern) if "__pycache__" not in p.parts}
    expected |= {"bincount/py.typed", "bincount/data/file_list.json", "requirements.txt"}
    assert files == expected
    names = {Requirement(r).name.lower() for r in requirements}
    assert {"pytorch-lightning", "hydra-core", "omegaconf", "torchmetrics"} <= names
    assert not names & {"torch", "torchvision", "sagemaker", "pytest", "moto"}


def test_staging_takes_sources_and_configs_only(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    for rel in ("bincount/__init__.py", "bincount/__pycache__/x.cpython-311.pyc",
                "bincount/.ipynb_checkpoints/y.py", "bincount/data/file_list.json",
                "bincount/notes.md", "conf/train.yaml", "conf/.train.yaml.swp",
                "scripts/train.py", "scripts/out.log", ".venv/lib/site.py",
                "data/abid/file_list.json", "outputs/train/metrics.json", "README.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")

    bundle = stage_bundle(tmp_path / "bundle", ["pytorch-lightning>=2.4"], root=root)

    assert bundle.files == ("bincount/__init__.py", "bincount/data/file_list.json",
                            "conf/train.yaml", "requirements.txt", "scripts/train.py")
    assert sorted(str(p.relative_to(bundle.root)) for p in bundle.root.rglob("*")
                  if p.is_file()) == list(bundle.files)
    assert (bundle.root / "requirements.txt").read_text() == "pytorch-lightning>=2.4\n"


@pytest.mark.parametrize(("instance_type", "count", "distributed"), [
    ("ml.g4dn.xlarge", 1, False),     # one GPU: a plain process
    ("ml.g4dn.12xlarge", 1, True),    # four GPUs: torchrun, DDP
    ("ml.g4dn.xlarge", 2, True),      # two instances: torchrun on each, DDP
])
def test_several_gpus_or_instances_run_torch_distributed(
    aws: Any, recorded: tuple[Any, dict], make_cfg: Callable[..., DictConfig],
    instance_type: str, count: int, distributed: bool,
) -> None:
    settings = [f"launcher.instance_type={instance_type}", f"launcher.instance_count={count}"]
    session, _ = recorded
    before = objects(aws)
    with prepare(launch_cfg(make_cfg, [], *settings), [], session) as job:
        hyperparameters = job.estimator.hyperparameters()
    enabled = json.loads(hyperparameters.get("sagemaker_torch_distributed_enabled", "false"))
    assert enabled is distributed
    assert objects(aws) == before, "preparing uploads nothing"


MISTAKES = [
    (["launcher.role=null"], [], "launcher.role: no IAM role given"),
    (["launcher.role=my-sagemaker-role"], [], "'my-sagemaker-role' is not an IAM role ARN"),
    (["launcher.inputs.train=bincount-jobs/abid"], [],
     "launcher.inputs.train: 'bincount-jobs/abid' is not an S3 URI"),
    (["launcher.output_path=/tmp/out"], [], "launcher.output_path: '/tmp/out' is not an S3 URI"),
    (["launcher.inputs.train=null"], [], "launcher.inputs.train: no training data given"),
    (["launcher.region=us-east-9"], [], "'us-east-9' is not a region with SageMaker"),
    (["launcher.instance_type=ml.g4dn.xlargee"], [], "Did you mean ml.g4dn.xlarge"),
    (["launcher.instance_type=ml.m5.xlarge", "launcher.instance_count=2"], [], "has no GPU"),
    (["launcher.instance_count=two"], [],
     "launcher.instance_count: expected an integer >= 1, got 'two'"),
    (["launcher.spot=sometimes"], [], "launcher.spot: expected true or false, got 'sometimes'"),
    (["launcher.spot=true", "launcher.max_wait=60"], [], "is less than max_run"),
    (["launcher.spot=true", "launcher.keep_alive_period=600"], [], "warm pools"),
    (["launcher.framework_version=1.0.0"], [], "no SageMaker PyTorch training image"),
    (["data.cache=true"], [], "data.cache=true"),
    ([], ["model.optimzer.lr=0.1"], "model.optimzer.lr"),
    ([], ["sagemaker_program=x.py"], "reserved by SageMaker"),
    ([], [f"++extra.k{i}=1" for i in range(93)], "a SageMaker job takes at most 92"),
    ([], ["+notes=" + "x" * 2500], "at most 2500 characters"),
]


@pytest.mark.parametrize(("settings", "overrides", "message"), MISTAKES)
def test_mistakes_stop_before_anything_is_uploaded(
    aws: Any, make_cfg: Callable[..., DictConfig], settings: list[str], overrides: list[str],
    message: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_credentials(monkeypatch)
    cfg = launch_cfg(make_cfg, [], *settings)
    before = objects(aws)
    with pytest.raises(BincountError, match=re.escape(message)), prepare(cfg, overrides):
        pass
    assert objects(aws) == before


def test_no_region_anywhere_is_a_clear_mistake(
    monkeypatch: pytest.MonkeyPatch, make_cfg: Callable[..., DictConfig], tmp_path: Path,
) -> None:
    fake_credentials(monkeypatch)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(BincountError, match=r"launcher.region: no AWS region\. Set launcher"), \
            prepare(launch_cfg(make_cfg, []), []):
        pass


def test_the_role_comes_from_sagemaker_role(
    monkeypatch: pytest.MonkeyPatch, make_cfg: Callable[..., DictConfig],
) -> None:
    monkeypatch.setenv("SAGEMAKER_ROLE", ROLE)
    assert make_cfg("launcher=sagemaker", tiny=False).launcher.role == ROLE


def _sagemaker_quotas(region: str, quotas: dict[str, float]) -> list[dict[str, Any]]:
    return [{"ServiceCode": "sagemaker", "ServiceName": "Amazon SageMaker",
             "QuotaArn": f"arn:aws:servicequotas:{region}::sagemaker/L-{i:08X}",
             "QuotaCode": f"L-{i:08X}", "QuotaName": name, "Value": value, "Unit": "None",
             "Adjustable": True, "GlobalQuota": False}
            for i, (name, value) in enumerate(quotas.items())]


@pytest.mark.parametrize(("quotas", "message"), [
    ({"ml.m5.xlarge for training job usage": 20.0, "ml.g5.xlarge for training job usage": 2.0},
     "ml.g4dn.xlarge is not offered for SageMaker training jobs in us-east-1"),
    ({"ml.g4dn.xlarge for training job usage": 0.0},
     "your account's quota 'ml.g4dn.xlarge for training job usage' is 0 in us-east-1"),
])
def test_an_instance_type_the_region_or_the_account_lacks_stops_before_upload(
    aws: Any, recorded: tuple[Any, dict], make_cfg: Callable[..., DictConfig],
    monkeypatch: pytest.MonkeyPatch, quotas: dict[str, float], message: str,
) -> None:
    """moto's Service Quotas knows only VPC quotas: the region's SageMaker ones are seeded."""
    from moto.servicequotas.models import ServiceQuotasBackend

    seeded = _sagemaker_quotas(REGION, quotas)
    listing = ServiceQuotasBackend.list_aws_default_service_quotas
    monkeypatch.setattr(
        ServiceQuotasBackend, "list_aws_default_service_quotas",
        lambda self, service_code: (seeded if service_code == "sagemaker"
                                    else listing(self, service_code)))
    monkeypatch.setattr(
        ServiceQuotasBackend, "get_service_quota",
        lambda self, service_code, quota_code: next(q for q in seeded
                                                    if q["QuotaCode"] == quota_code))
    session, sent = recorded
    before = objects(aws)
    with pytest.raises(BincountError, match=re.escape(message)), \
            prepare(launch_cfg(make_cfg, []), [], session):
        pass
    assert objects(aws) == before and "CreateTrainingJob" not in sent


@pytest.mark.slow
def test_the_command_submits_and_returns_with_the_job_name_or_stops_with_the_fix(
    tmp_path: Path,
) -> None:
    """``scripts/train.py launcher=sagemaker ...`` against moto's server on 127.0.0.1."""
    with LocalS3(REGION) as s3:
        reset_moto(s3.url)
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_"))}
        env.update(AWS_ENDPOINT_URL=s3.url, AWS_ACCESS_KEY_ID="testing", PYTHONWARNINGS="ignore",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)
        command = [sys.executable, str(ROOT / "scripts" / "train.py"), "launcher=sagemaker",
                   f"launcher.inputs.train={TRAIN}", f"launcher.output_path={OUTPUT}",
                   "model.optimizer.lr=0.0023", "trainer.max_epochs=21", "launcher.wait=false",
                   f"paths.root_dir={tmp_path}"]

        refused = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=300)
        assert refused.returncode == 2
        assert "launcher.role: no IAM role given" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert "Contents" not in client.list_objects_v2(Bucket=BUCKET), "nothing uploaded"

        done = subprocess.run(command, cwd=tmp_path, env={**env, "SAGEMAKER_ROLE": ROLE},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        name = re.search(r"SageMaker training job: (bincount-[\w-]+)", done.stdout).group(1)
        assert f"#/jobs/{name}" in done.stdout
        assert "source bundle:" in done.stdout
        (record,) = (tmp_path / "outputs" / "train" / "runs").glob("*/job.json")
        assert json.loads(record.read_text())["job_name"] == name
        job = boto3.client("sagemaker", endpoint_url=s3.url, region_name=REGION,
                           aws_access_key_id="testing", aws_secret_access_key="testing"
                           ).describe_training_job(TrainingJobName=name)
        assert job["HyperParameters"]["model.optimizer.lr"] == '"0.0023"'


def test_debugger_switch_reaches_the_training_job(
    aws: Any, recorded: tuple[Any, dict], make_cfg: Callable[..., DictConfig],
) -> None:
    session, sent = recorded
    submit(launch_cfg(make_cfg, []), [], session)
    off = sent["CreateTrainingJob"]
    assert "DebugRuleConfigurations" not in off and "DebugHookConfig" not in off
    assert off.get("ProfilerConfig", {}).get("DisableProfiler") is True

    submit(launch_cfg(make_cfg, [], "launcher.debugger.enabled=true"), [], session)
    on = sent["CreateTrainingJob"]
    rules = {r["RuleConfigurationName"] for r in on["DebugRuleConfigurations"]}
    assert {"VanishingGradient", "Overfit", "LossNotDecreasing"} <= rules
    # (the SDK itself leaves the hook config out of a job that syncs checkpoints)
    assert on["ProfilerConfig"].get("DisableProfiler") is not True
