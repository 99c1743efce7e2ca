"""Submitting with ``launcher=sagemaker`` under moto (in-process): the CreateTrainingJob request
as sent (botocore event hooks), the uploaded source bundle, and the launcher's record of the job.

The SageMaker SDK re-validates its defaults config (telemetry off) against its JSON schema on
every lookup: one submission takes 5-15 s, hence slow. Mistakes stop before the estimator is
built, in a moment."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.launchers.estimator import metric_definitions
from bincount.launchers.sagemaker import SageMakerLauncher, prepare, submit
from tests.support.aws import (
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
    with_settings,
)

OVERRIDES = [
    "model.optimizer.lr=0.0023", "trainer.max_epochs=21", "data.batch_size=16",
    "++trainer.gradient_clip_val=1.0", "~callbacks.lr_monitor", "model.arch=resnet34",
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


@pytest.mark.parametrize(("settings", "overrides", "message"), [
    (["launcher.role=my-role"], [], "launcher.role: 'my-role' is not an IAM role ARN"),
    (["launcher.instance_type=ml.g4dn.xlargee"], [], "Did you mean ml.g4dn.xlarge"),
    ([], ["sagemaker_program=x.py"], "reserved by SageMaker"),
    ([], ["model.optimzer.lr=0.1"], "do not compose the training config"),
])
def test_a_mistake_stops_before_anything_is_built(
    job_cfg: DictConfig, monkeypatch: pytest.MonkeyPatch, settings: list[str],
    overrides: list[str], message: str,
) -> None:
    fake_credentials(monkeypatch)
    with pytest.raises(BincountError, match=re.escape(message)), \
            prepare(with_settings(job_cfg, *settings), overrides):
        pytest.fail("prepared")


@pytest.mark.slow
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

    result = SageMakerLauncher.from_cfg(cfg, session).run(cfg, command_line)

    request, name = sent["CreateTrainingJob"], result["job_name"]
    assert request["TrainingJobName"] == name and name.startswith("bincount-")
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert request["RoleArn"] == ROLE
    assert request["ResourceConfig"] == {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1,
                                         "VolumeSizeInGB": 50}
    hyperparameters = decoded(request["HyperParameters"])
    assert hyperparameters["sagemaker_program"] == "scripts/train.py"
    source = f"{OUTPUT}/{name}/source/sourcedir.tar.gz"
    assert hyperparameters["sagemaker_submit_directory"] == source
    assert "sagemaker_torch_distributed_enabled" not in hyperparameters
    user = {k: v for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}
    assert user == {"model.optimizer.lr": "0.0023", "trainer.max_epochs": "21",
                    "data.batch_size": "16", "++trainer.gradient_clip_val": "1.0",
                    "~callbacks.lr_monitor": "", "model.arch": "resnet34"}

    (channel,) = request["InputDataConfig"]
    assert channel["ChannelName"] == "train"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == TRAIN
    assert request["OutputDataConfig"]["S3OutputPath"] == OUTPUT
    assert request["CheckpointConfig"] == {"S3Uri": f"{OUTPUT}/{name}/checkpoints",
                                           "LocalPath": "/opt/ml/checkpoints"}
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600,
                                            "MaxWaitTimeInSeconds": 7200}
    tensorboard = {"S3OutputPath": f"{OUTPUT}/{name}/tensorboard",
                   "LocalPath": "/opt/ml/output/tensorboard"}
    assert request["TensorBoardOutputConfig"] == tensorboard
    assert {"Key": "project", "Value": "bincount"} in request["Tags"]
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == metric_definitions(
        cfg.callbacks.metric_lines.names)
    # Debugger off (the default): explicitly, or the SDK would attach a hook and a profiler.
    assert "DebugRuleConfigurations" not in request and "DebugHookConfig" not in request
    assert request["ProfilerConfig"].get("DisableProfiler") is True
    from sagemaker.config.config_schema import TELEMETRY_OPT_OUT_PATH
    from sagemaker.utils import resolve_value_from_config

    assert resolve_value_from_config(config_path=TELEMETRY_OPT_OUT_PATH,
                                     sagemaker_session=session) is True

    out = capsys.readouterr().out
    assert f"SageMaker training job: {name}" in out
    console = f"https://{REGION}.console.aws.amazon.com/sagemaker/home?region={REGION}#/jobs/{name}"
    assert console in out
    assert re.search(r"source bundle: \d+ files, \d+ KiB", out)
    assert [k for k in objects(aws) if name in k] == [f"runs/{name}/source/sourcedir.tar.gz"]
    record = json.loads((Path(cfg.paths.output_dir) / "job.json").read_text())
    assert record == {"job_name": name, "console": console,
                      "model": f"{OUTPUT}/{name}/output/model.tar.gz",
                      "output": f"{OUTPUT}/{name}/output/output.tar.gz",
                      "checkpoints": f"{OUTPUT}/{name}/checkpoints",
                      "tensorboard": f"tensorboard --logdir {OUTPUT}/{name}/tensorboard"}


@pytest.mark.slow
def test_the_uploaded_bundle_is_the_staged_one(
    aws: Any, recorded: tuple[Any, dict], make_cfg: Callable[..., DictConfig],
) -> None:
    session, _ = recorded
    cfg = launch_cfg(make_cfg, [], "launcher.checkpoint_s3_uri=s3://bincount-jobs/old/ckpt")
    with SageMakerLauncher.from_cfg(cfg, session).prepare(cfg, []) as job:
        staged = set(job.bundle.files)
        job.estimator.fit(job.inputs, job_name=job.name, wait=False)

    body = aws.get_object(Bucket=BUCKET, Key=f"runs/{job.name}/source/sourcedir.tar.gz")["Body"]
    with tarfile.open(fileobj=io.BytesIO(body.read()), mode="r:gz") as tar:
        assert {m.name for m in tar.getmembers() if m.isfile()} == staged
    # a previous job's checkpoints, to resume from
    assert job.estimator.checkpoint_s3_uri == "s3://bincount-jobs/old/ckpt"


@pytest.mark.slow
def test_with_debugger_on_the_job_gets_its_rules_and_profiler(
    aws: Any, recorded: tuple[Any, dict], make_cfg: Callable[..., DictConfig],
) -> None:
    session, sent = recorded
    submit(launch_cfg(make_cfg, [], "launcher.debugger.enabled=true"), [], session)
    on = sent["CreateTrainingJob"]
    rules = {r["RuleConfigurationName"] for r in on["DebugRuleConfigurations"]}
    assert {"VanishingGradient", "Overfit", "LossNotDecreasing"} <= rules
    # (the SDK itself leaves the hook config out of a job that syncs checkpoints)
    assert on["ProfilerConfig"].get("DisableProfiler") is not True
