"""The job's container side, for real: the SageMaker training toolkit (``sagemaker-training``
with ``sagemaker-pytorch-training``, the code that starts the entry point in the PyTorch
training image) runs outside SageMaker on a temporary ``SAGEMAKER_BASE_DIR`` tree.

The job is submitted first (moto's server on 127.0.0.1); the tree gets the hyperparameters
exactly as the captured CreateTrainingJob request carries them, so the toolkit downloads the
uploaded bundle from that server, installs its requirements.txt (offline: ``PIP_NO_INDEX``, every
requirement is already in this environment), sets the SM_* variables and runs
``scripts/train.py --key value ...``, as on SageMaker.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import boto3
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from bincount.data.splits import ensure_manifest
from bincount.data.synthetic import render_synthetic
from bincount.launchers.container import CHECKPOINT_KEY, TENSORBOARD_KEY
from bincount.launchers.sagemaker import follow, submit
from bincount.models.export import load_model
from tests.support.aws import (
    BUCKET,
    REGION,
    fake_credentials,
    launch_cfg,
    recording_session,
    reset_moto,
)
from tests.support.local_s3 import LocalS3
from tests.support.paths import ROOT

# Tiny training on the ABID-layout channel (data=abid reads paths.data_dir = SM_CHANNEL_TRAIN).
OVERRIDES = [
    "model.arch=resnet18", "model.pretrained=false", "model.optimizer.lr=0.0023",
    "data.image_size=32", "data.batch_size=8", "data.num_workers=0",
    "trainer=cpu", "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
    "++trainer.enable_model_summary=false", "callbacks.validation_figures.max_images=4",
]
PYTORCH_TRAINING_MODULE = "sagemaker_pytorch_container.training:main"  # set in the image
TOOLKIT = Path(sys.executable).with_name("train")  # sagemaker-training's console script


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalS3]:
    with pytest.MonkeyPatch.context() as mp, LocalS3(REGION) as s3:
        fake_credentials(mp)
        mp.setenv("AWS_ENDPOINT_URL", s3.url)
        reset_moto(s3.url)
        s3.client().create_bucket(Bucket=BUCKET)
        yield s3


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training channel: synthetic bins in the ABID layout, with their split manifest."""
    data = render_synthetic(tmp_path_factory.mktemp("channel") / "abid", per_class=10,
                            image_size=48, seed=0, counts=(1, 2, 3, 4, 5))
    ensure_manifest(data, [0.8, 0.1, 0.1], 42)
    return data


def submitted(make_cfg: Callable[..., DictConfig], *settings: str) -> dict[str, Any]:
    """Submit the job (moto) and return the CreateTrainingJob request as sent."""
    cfg = launch_cfg(make_cfg, OVERRIDES, *settings)
    session, sent = recording_session()
    submit(cfg, ["launcher=sagemaker", *settings, *OVERRIDES], session)
    return sent["CreateTrainingJob"]


def sagemaker_tree(base: Path, request: dict[str, Any], channel: Path,
                   extra_hyperparameters: dict[str, str] | None = None) -> Path:
    """``/opt/ml`` as SageMaker lays it out for the request, under ``base``."""
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    hyperparameters = {**request["HyperParameters"], **(extra_hyperparameters or {})}
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": "localhost",  # "algo-1" would have to resolve
        "hosts": ["localhost"],
        "current_instance_type": request["ResourceConfig"]["InstanceType"],
        "network_interface_name": "lo",
    }))
    channels = {c["ChannelName"]: {"TrainingInputMode": "File", "S3DistributionType":
                                   "FullyReplicated", "RecordWrapperType": "None"}
                for c in request["InputDataConfig"]}
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    if not (base / "input" / "data" / "train").exists():
        shutil.copytree(channel, base / "input" / "data" / "train")
    return base


def run_toolkit(base: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(base),
        "SAGEMAKER_TRAINING_MODULE": PYTORCH_TRAINING_MODULE,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",  # torchrun
        "PIP_NO_INDEX": "1",  # requirements.txt must be satisfied by what is installed
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONWARNINGS": "ignore",
    }
    return subprocess.run([str(TOOLKIT)], cwd=base, env=env, capture_output=True, text=True,
                          timeout=timeout)


def metric_values(output: str, definitions: list[dict[str, str]]) -> dict[str, list[float]]:
    """What SageMaker would read from the log with the request's metric definitions."""
    return {d["Name"]: [float(v) for v in re.findall(d["Regex"], output)] for d in definitions}


class Run(NamedTuple):
    request: dict[str, Any]  # CreateTrainingJob, as sent
    base: Path  # the SAGEMAKER_BASE_DIR tree
    done: subprocess.CompletedProcess  # the toolkit's run
    first: Path  # a copy of that run's model/ and output/ (the restart test replaces them)


@pytest.fixture(scope="module")
def trained(aws: LocalS3, channel: Path, tmp_path_factory: pytest.TempPathFactory,
            ) -> Run:
    """One job submitted and run by the toolkit."""
    tmp = tmp_path_factory.mktemp("submit")

    def make_cfg(*overrides: str, tiny: bool = False) -> DictConfig:
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            return compose("train", overrides=[f"paths.output_dir={tmp / 'local'}", *overrides])

    request = submitted(make_cfg)
    base = sagemaker_tree(tmp_path_factory.mktemp("opt_ml"), request, channel)
    done = run_toolkit(base)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    first = tmp_path_factory.mktemp("first_run")
    for name in ("model", "output"):
        shutil.copytree(base / name, first / name)
    return Run(request, base, done, first)


@pytest.mark.slow
def test_the_toolkit_runs_the_submitted_job_and_a_restart_resumes(
    trained: Run, channel: Path,
) -> None:
    request, base, done, _ = trained
    log = done.stdout + done.stderr

    assert (base / "output" / "success").is_file(), "the toolkit's success marker"
    assert not (base / "output" / "failure").exists()
    assert "Installing dependencies from requirements.txt" in log
    # the bundle's code ran, not this checkout's: the toolkit unpacked it into code/
    assert (base / "code" / "scripts" / "train.py").is_file()
    assert "--model.optimizer.lr 0.0023" in log  # the toolkit's invocation, --key value

    net, spec = load_model(base / "model")
    assert spec.arch == "resnet18" and spec.image_size == 32
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    assert {"last.ckpt", "best.ckpt"} <= {p.name for p in (base / "checkpoints").iterdir()}
    assert list((base / "output" / "tensorboard").glob("events.out.tfevents.*"))
    assert f"tensorboard --logdir {base / 'output' / 'tensorboard'}\n" in done.stdout
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())

    values = metric_values(done.stdout, request["AlgorithmSpecification"]["MetricDefinitions"])
    assert len(values["train_loss"]) == 1 and len(values["val_acc"]) == 1  # one epoch, rank 0
    assert len(values["val_loss"]) == 2  # the epoch's, then the best again at the end
    assert values["val_loss"][-1] == pytest.approx(metrics["val_loss"], abs=1e-5)
    assert "it/s]" not in log, "no progress bar in the container"

    # A restart (spot) gets fresh model/output dirs but the synced checkpoints: it resumes.
    shutil.rmtree(base / "model")
    shutil.rmtree(base / "output")
    ckpt = torch.load(base / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["epoch"] == 0
    sagemaker_tree(base, request, channel, {"trainer.max_epochs": json.dumps("2")})
    again = run_toolkit(base)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-5000:]
    last = base / "checkpoints" / "last.ckpt"
    assert f"Restoring states from the checkpoint path at {last}" in again.stdout + again.stderr
    epochs = re.findall(r"epoch=(\d+) val_loss=", again.stdout)
    assert epochs == ["1"], "only the epoch after the checkpoint was trained"
    assert torch.load(last, weights_only=True, map_location="cpu")["epoch"] == 1
    assert (base / "model" / "model.pt").is_file() and (base / "output" / "success").is_file()


def resolved_without_locations(cfg: DictConfig) -> dict[str, Any]:
    """The config resolved with every location made equal: paths.* set to placeholders and
    the two directories the container sets itself removed."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    for key in (CHECKPOINT_KEY, TENSORBOARD_KEY):
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent)
        if node is not None:
            node.pop(leaf, None)
    cfg.paths = {"root_dir": "/r", "data_dir": "/d", "cache_dir": "/c", "log_dir": "/l",
                 "output_dir": "/o", "model_dir": "/m", "checkpoint_dir": "/k"}
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.slow
def test_the_container_trains_on_the_config_launcher_local_composes(
    trained: Run, channel: Path,
) -> None:
    _, base, _, first = trained
    in_container = OmegaConf.load(first / "output" / "data" / ".hydra" / "config.yaml")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        local = compose("train", overrides=["launcher=local", *OVERRIDES,
                                            f"paths.data_dir={channel}"])
    assert in_container.launcher == local.launcher
    assert resolved_without_locations(in_container) == resolved_without_locations(local)
    # and the locations are the container's
    assert in_container.paths.data_dir == str(base / "input" / "data" / "train")
    assert in_container.paths.model_dir == str(base / "model")
    assert OmegaConf.select(in_container, CHECKPOINT_KEY) == str(base / "checkpoints")
    assert OmegaConf.select(in_container, TENSORBOARD_KEY) == str(base / "output" / "tensorboard")


def _tar_gz(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    return buffer.getvalue()


@pytest.mark.slow
def test_waiting_streams_the_log_then_unpacks_model_and_metrics(
    trained: Run, aws: LocalS3,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """SageMaker's part after the run, played with the run's real outputs: model.tar.gz and
    output.tar.gz under the job's output path, its log in CloudWatch (moto marks the job
    Completed at once); then ``follow`` does what ``launcher.wait=true`` does."""
    request, _, done, first = trained
    job = request["TrainingJobName"]
    output = request["OutputDataConfig"]["S3OutputPath"].removeprefix(f"s3://{BUCKET}/")
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=BUCKET, Key=f"{output}/{job}/output/model.tar.gz",
                  Body=_tar_gz(first / "model"))
    s3.put_object(Bucket=BUCKET, Key=f"{output}/{job}/output/output.tar.gz",
                  Body=_tar_gz(first / "output" / "data"))
    logs = boto3.client("logs", region_name=REGION)
    group, stream = "/aws/sagemaker/TrainingJobs", f"{job}/algo-1-1700000000"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
        {"timestamp": now + i, "message": line} for i, line in enumerate(done.stdout.splitlines())
        if line.strip()
    ])
    session, _ = recording_session()

    result = follow(job, session, tmp_path / "run", tmp_path / "run" / "model", poll=1)

    out = capsys.readouterr().out
    assert "best val_loss=" in out, "the job's log was streamed"
    net, spec = load_model(tmp_path / "run" / "model")
    assert spec.arch == "resnet18"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics == json.loads((first / "output" / "data" / "metrics.json").read_text())
    assert result["metrics"]["val_loss"] == metrics["val_loss"]
    assert (tmp_path / "run" / "job" / ".hydra" / "config.yaml").is_file()
    assert json.loads((tmp_path / "run" / "job.json").read_text())["job_name"] == job
    assert "bincount results" in out and "test" in out  # the results table


@pytest.mark.slow
def test_torch_distributed_runs_lightning_ddp_over_torchrun(
    trained: Run, channel: Path,
    tmp_path: Path,
) -> None:
    """The job as the SDK sends it for a multi-GPU instance or several instances (the launcher
    tests check that it adds this flag); on this CPU machine the processes-per-host parameter
    stands in for the instance's GPU count: two processes, gloo."""
    request = trained.request
    base = sagemaker_tree(tmp_path / "opt_ml", request, channel, {
        "sagemaker_torch_distributed_enabled": "true",
        "sagemaker_mpi_num_of_processes_per_host": "2",
    })

    done = run_toolkit(base)

    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    assert "torchrun --nnodes 1 --nproc_per_node 2" in log
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log  # Lightning's DDP over both ranks
    assert len(re.findall(r"epoch=0 val_loss=", done.stdout)) == 1, "metric lines: rank 0 only"
    assert (base / "model" / "model.pt").is_file() and (base / "output" / "success").is_file()
