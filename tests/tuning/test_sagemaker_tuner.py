"""``tuner=sagemaker`` under moto: the CreateHyperParameterTuningJob request as sent (botocore
event hooks) against the search space, the objective and the launcher's own training job."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import hydra
import pytest
import yaml
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.launchers.sagemaker import submit
from bincount.tuning.objective import objective
from bincount.tuning.sagemaker_tuner import launch_tuning, run_sweep
from tests.support.aws import (
    BUCKET,
    OUTPUT,
    REGION,
    ROLE,
    TRAIN,
    decoded,
    fake_credentials,
    moto_bucket,
    recording_session,
)
from tests.support.paths import CONF, ROOT

SETTINGS = [f"launcher.role={ROLE}", f"launcher.output_path={OUTPUT}",
            f"launcher.inputs.train={TRAIN}"]
TRAINING = ["model.arch=resnet34", "data.image_size=128", "++trainer.gradient_clip_val=1.0"]
SEARCHED = {"model.optimizer.lr", "data.batch_size", "trainer.max_epochs"}
def here(tmp_path: Path) -> list[str]:
    """The job's source from this checkout; what the sweep writes under tmp_path."""
    return [f"paths.root_dir={ROOT}", f"paths.log_dir={tmp_path / 'outputs'}"]


TUNE = hydra.main(config_path=str(CONF), config_name="tune", version_base="1.3")(objective)


@pytest.fixture(scope="module")
def aws() -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp, moto_bucket(mp) as s3:
        yield s3


@pytest.fixture
def recorded(aws: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, dict]]:
    fake_credentials(monkeypatch)
    return recording_session()


def same_job(definition: dict, job: dict) -> None:
    """A tuning job's training job definition runs the image, role, data and hardware of a
    CreateTrainingJob request."""
    for key in ("RoleArn", "StoppingCondition", "InputDataConfig", "OutputDataConfig",
                "EnableManagedSpotTraining"):
        assert definition.get(key) == job.get(key), key
    # The SDK sends the tuning job's hardware as HyperParameterTuningResourceConfig.
    hardware = definition.get("ResourceConfig") or definition["HyperParameterTuningResourceConfig"]
    assert {k: hardware[k] for k in job["ResourceConfig"]} == job["ResourceConfig"]
    for key in ("TrainingImage", "MetricDefinitions", "TrainingInputMode"):
        assert definition["AlgorithmSpecification"].get(key) == \
            job["AlgorithmSpecification"].get(key), key


# A submission through the SDK takes several seconds (it validates its defaults config).
@pytest.mark.slow
def test_the_tuning_request_searches_the_space_for_val_loss_over_the_launchers_job(
    recorded: tuple[Any, dict[str, dict]], aws: Any, make_cfg: Callable[..., DictConfig],
) -> None:
    session, sent = recorded
    tuning = ["tuner=sagemaker", *SETTINGS, "tuner.wait=false", "tuner.max_jobs=12",
              "tuner.max_parallel_jobs=3", *TRAINING]
    # The job's source is this checkout (paths.root_dir; a script finds it from its conf/).
    cfg = make_cfg(f"paths.root_dir={ROOT}", *tuning, name="tune", tiny=False)
    results = launch_tuning(cfg, tuning, session)

    request = sent["CreateHyperParameterTuningJob"]
    name = request["HyperParameterTuningJobName"]
    assert name == results["tuning_job"] and name.startswith("bincount-tune-") and len(name) <= 32
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Minimize",
                                                          "MetricName": "val_loss"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 12,
                                        "MaxParallelTrainingJobs": 3}
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [{
        "Name": "model.optimizer.lr", "MinValue": "0.001", "MaxValue": "0.1",
        "ScalingType": "Logarithmic"}]
    assert ranges["IntegerParameterRanges"] == [{
        "Name": "trainer.max_epochs", "MinValue": "10", "MaxValue": "40", "ScalingType": "Linear"}]
    # JSON-encoded, as the SDK sends every hyperparameter of a framework estimator
    assert ranges["CategoricalParameterRanges"] == [{
        "Name": "data.batch_size", "Values": ['"32"', '"64"', '"128"', '"256"', '"512"']}]

    definition = request["TrainingJobDefinition"]
    # The objective is one of the metrics the jobs print (the launcher's own definitions).
    assert "val_loss" in [m["Name"] for m in definition["AlgorithmSpecification"][
        "MetricDefinitions"]]
    static = decoded(definition["StaticHyperParameters"])
    assert not SEARCHED & set(static)  # searched, so never fixed
    assert static["sagemaker_submit_directory"] == f"{OUTPUT}/{name}/source/sourcedir.tar.gz"
    assert "CheckpointConfig" not in definition  # trials must not resume each other

    # The launcher's own job for the same command line: same image, role, data, hardware,
    # metric definitions, and the same hyperparameters besides the searched ones.
    job = submit(make_cfg(f"paths.root_dir={ROOT}", "launcher=sagemaker", *SETTINGS,
                          "launcher.wait=false", *TRAINING, tiny=False),
                 ["launcher=sagemaker", *SETTINGS, *TRAINING], session)
    alone = sent["CreateTrainingJob"]
    same_job(definition, alone)
    own = {k: v for k, v in decoded(alone["HyperParameters"]).items()
           if k not in ("sagemaker_submit_directory", "sagemaker_job_name")}
    assert {k: v for k, v in static.items() if k in own} == own
    assert {k: v for k, v in own.items() if not k.startswith("sagemaker_")} == {
        "model.arch": "resnet34", "data.image_size": "128", "++trainer.gradient_clip_val": "1.0"}
    assert job.name != name


@pytest.mark.slow
def test_tune_m_tuner_sagemaker_waits_and_reports_the_best_job(
    aws: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    fake_credentials(monkeypatch)
    monkeypatch.setattr(sys, "argv", [
        "tune.py", "-m", *here(tmp_path), "tuner=sagemaker", *SETTINGS,
        "tuner.strategy=Hyperband", "search_space.epochs.high=25", "tuner.max_jobs=6",
    ])
    TUNE()

    out = capsys.readouterr().out
    (results_file,) = (tmp_path / "outputs" / "tune" / "sagemaker").glob(
        "*/optimization_results.yaml")
    results = yaml.safe_load(results_file.read_text())
    name = results["tuning_job"]
    assert f"SageMaker tuning job: {name}" in out
    # what moto holds is what was sent
    desc = boto3.client("sagemaker", region_name=REGION).describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name)
    config = desc["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Hyperband"
    assert config["StrategyConfig"] == {"HyperbandStrategyConfig": {"MinResource": 1,
                                                                    "MaxResource": 25}}
    assert config["TrainingJobEarlyStoppingType"] == "Off"  # Hyperband stops jobs itself
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 6
    # It waited, then reported the best training job (moto completes tuning jobs at once).
    best = desc["BestTrainingJob"]["TrainingJobName"]
    assert results["status"] == "Completed" and results["best_training_job"] == best
    assert f"best training job {best}" in out


# The moto fixture alone takes seconds; settings are checked in tests/tuning/test_settings.py.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tuner.max_jobs=2", "tuner.max_parallel_jobs=4"],
         "tuner.max_parallel_jobs: 4 is more than tuner.max_jobs (2)"),
        (["tuner.strategy=Genetic"], "tuner.strategy: expected one of Bayesian, Random"),
        (["model.optimizer.lr=0.01,0.1"], "model.optimizer.lr=0.01,0.1: tuner=sagemaker "
                                          "searches search_space"),
    ],
)
def test_bad_tuner_settings_stop_before_anything_is_uploaded(
    aws: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], overrides: list[str], message: str,
) -> None:
    fake_credentials(monkeypatch)
    before = aws.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
    monkeypatch.setattr(sys, "argv", ["tune.py", "-m", *here(tmp_path),
                                      "tuner=sagemaker", *SETTINGS, *overrides])
    with pytest.raises(SystemExit) as exit_info:
        TUNE()
    assert exit_info.value.code == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert aws.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == before


def test_a_sweep_on_the_command_line_is_refused_naming_the_search_space(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg("tuner=sagemaker", name="tune", tiny=False)
    with pytest.raises(BincountError, match=r"model.optimizer.lr=0.01,0.1: tuner=sagemaker "
                                            r"searches search_space; set ranges there"):
        run_sweep(cfg, ["model.arch=resnet34", "model.optimizer.lr=0.01,0.1"])
