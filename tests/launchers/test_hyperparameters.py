"""The command line's overrides -> the job's hyperparameters, and back: the training toolkit's
``--key value`` arguments become the same overrides in the container."""

from __future__ import annotations

import re

import pytest
from sagemaker_training import mapping

from bincount.errors import BincountError
from bincount.launchers.container import args_to_overrides
from bincount.launchers.hyperparameters import check_overrides, job_overrides, to_hyperparameters
from tests.support.paths import CONF

OVERRIDES = [
    "model.optimizer.lr=0.0023", "trainer.max_epochs=21", "data.batch_size=16",
    "data.counts=[1,2,3,4,5]", "++trainer.gradient_clip_val=1.0", "~callbacks.lr_monitor",
    "model.arch=resnet34", "experiment=demo",
]


def test_your_own_bins_local_locations_stay_here_and_the_job_reads_its_channel() -> None:
    command_line = ["data=table", "data.table=/home/me/bins/labels.csv", "data=folder",
                    "++data.root=/home/me/bins", "data.batch_size=8"]

    kept = job_overrides(command_line)

    assert kept == ["data=table", "data=folder", "data.batch_size=8"]
    job = check_overrides(kept, CONF)  # in the job, the folder is the training channel
    assert job.data.root == job.paths.data_dir


def test_overrides_travel_one_per_key_and_come_back_unchanged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    command_line = ["launcher=sagemaker", "launcher.spot=true", "paths.root_dir=/home/me/bincount",
                    "hydra.verbose=true", *OVERRIDES]
    caplog.set_level("INFO")

    kept = job_overrides(command_line)
    hyperparameters = to_hyperparameters(kept)

    assert kept == OVERRIDES
    assert "not sent to the job" in caplog.text and "paths.root_dir=/home/me" in caplog.text
    assert hyperparameters == {
        "model.optimizer.lr": "0.0023", "trainer.max_epochs": "21", "data.batch_size": "16",
        "data.counts": "[1,2,3,4,5]", "++trainer.gradient_clip_val": "1.0",
        "~callbacks.lr_monitor": "", "model.arch": "resnet34", "experiment": "demo"}
    # the toolkit's arguments (keys sorted, --key value) -> the container's overrides
    assert sorted(args_to_overrides(mapping.to_cmd_args(hyperparameters))) == sorted(OVERRIDES)
    check_overrides(kept, CONF)  # they compose the training config


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.lr=[1,"], "override: "),
    (["sagemaker_program=x.py"], "override 'sagemaker_program=x.py': keys starting with "
     "'sagemaker_' are reserved by SageMaker"),
    ([f"++extra.k{i}=1" for i in range(93)], "93 overrides: a SageMaker job takes at most 92"),
    (["+notes=" + "x" * 2500], "override +notes: SageMaker allows hyperparameter values of at "
     "most 2500 characters, this one has 2502"),
    (["+" + "k" * 256 + "=1"], "SageMaker allows hyperparameter names of at most 256 characters"),
])
def test_overrides_a_job_cannot_take_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(BincountError, match=re.escape(message)):
        to_hyperparameters(overrides)


def test_an_override_of_a_key_the_config_lacks_is_named() -> None:
    with pytest.raises(BincountError, match=r"do not compose the training config: .*optimzer"):
        check_overrides(["model.optimzer.lr=0.1"], CONF)
