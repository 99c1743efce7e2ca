"""The container side: SageMaker's ``--key value`` arguments and ``SM_*`` variables -> the Hydra
overrides ``scripts/train.py`` composes (the real toolkit runs it in tests/e2e)."""

from __future__ import annotations

import pytest

from bincount.errors import BincountError
from bincount.launchers.container import (
    CHECKPOINT_KEY,
    TENSORBOARD_KEY,
    args_to_overrides,
    container_argv,
)

ENV = {"SM_TRAINING_ENV": "{}", "SAGEMAKER_BASE_DIR": "/base", "SM_CHANNEL_TRAIN": "/base/data",
       "SM_MODEL_DIR": "/base/model", "SM_OUTPUT_DATA_DIR": "/base/output/data"}
LOCATIONS = ["paths.data_dir=/base/data", "paths.output_dir=/base/output/data",
             "paths.model_dir=/base/model", f"++{CHECKPOINT_KEY}=/base/checkpoints",
             f"++{TENSORBOARD_KEY}=/base/output/tensorboard"]


def test_outside_a_container_the_command_line_is_left_alone() -> None:
    argv = ["train.py", "--model.optimizer.lr", "0.1"]
    assert container_argv(argv, env={}) == argv


def test_arguments_become_overrides_and_the_container_sets_the_locations() -> None:
    argv = ["train.py", "--model.optimizer.lr", "0.1", "--~callbacks.lr_monitor", "",
            "--++trainer.gradient_clip_val", "1.0", f"--{CHECKPOINT_KEY}", "/mine"]

    assert container_argv(argv, ENV) == [
        "train.py", "model.optimizer.lr=0.1", "~callbacks.lr_monitor",
        "++trainer.gradient_clip_val=1.0", *LOCATIONS]  # the user's checkpoint dir is dropped
    # Lightning's DDP launcher restarts the script with the translated argv: nothing changes.
    assert container_argv(container_argv(argv, ENV), ENV) == container_argv(argv, ENV)


def test_under_torchrun_the_trainer_runs_ddp_over_every_process() -> None:
    env = {**ENV, "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}
    assert container_argv(["train.py"], env)[-3:] == [
        "++trainer.strategy=ddp", "++trainer.devices=4", "++trainer.num_nodes=2"]
    assert container_argv(["train.py"], {**ENV, "WORLD_SIZE": "1"}) == ["train.py", *LOCATIONS]


@pytest.mark.parametrize(("args", "message"), [
    (["--model.arch"], "--model.arch has no value"),
    (["--", "x"], "'--' is not a --key"),
])
def test_malformed_arguments_are_named(args: list[str], message: str) -> None:
    with pytest.raises(BincountError, match=message):
        args_to_overrides(args)
