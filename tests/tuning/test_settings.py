"""Tuner settings: checked in one place per backend, a bad value named by its key."""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.tuning.settings import (
    OptunaSettings,
    SageMakerTunerSettings,
    build_pruner,
)


def test_the_optuna_settings_are_the_configs(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("tuner.n_trials=7", "tuner.pruner=median", name="tune", tiny=False)
    settings = OptunaSettings.from_cfg(cfg.tuner, cfg.objective)
    assert (settings.n_trials, settings.pruner, settings.objective.metric) == (7, "median",
                                                                               "val_loss")
    assert settings.storage == f"sqlite:///{cfg.tuner.study_dir}/optuna.db"
    assert settings.sampler["seed"] == cfg.seed  # resolved: it outlives the config
    assert isinstance(build_pruner(settings.pruner, settings.pruners), optuna.pruners.MedianPruner)
    assert isinstance(build_pruner(None, settings.pruners), optuna.pruners.NopPruner)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tuner.n_trials=0"], "tuner.n_trials: expected a positive integer, got 0"),
        (["tuner.n_jobs=two"], "tuner.n_jobs: expected a positive integer, got 'two'"),
        (["tuner.n_trials=true"], "tuner.n_trials: expected a positive integer, got True"),
        (["tuner.max_failure_rate=1.5"], "tuner.max_failure_rate: expected 0..1, got 1.5"),
        (["tuner.storage=null"], "tuner.storage: expected an Optuna storage URL"),
        (["tuner.pruner=sometimes"], "tuner.pruner: unknown pruner 'sometimes' (expected one "
                                     "of: hyperband, median, or null)"),
        (["objective.direction=down"], "objective.direction: expected minimize or maximize, "
                                       "got 'down'"),
    ],
)
def test_a_bad_optuna_setting_names_its_key(
    make_cfg: Callable[..., DictConfig], overrides: list[str], message: str,
) -> None:
    cfg = make_cfg(*overrides, name="tune", tiny=False)
    with pytest.raises(BincountError) as err:
        OptunaSettings.from_cfg(cfg.tuner, cfg.objective)
    assert str(err.value).startswith(message)


SAGEMAKER = "tuner=sagemaker"


def test_the_sagemaker_settings_are_the_configs(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg(SAGEMAKER, "tuner.strategy=Hyperband", "search_space.epochs.high=25",
                   name="tune", tiny=False)
    settings = SageMakerTunerSettings.from_cfg(cfg.tuner, cfg.objective)
    assert settings.strategy == "Hyperband" and settings.hyperband_max_resource == 25
    assert settings.max_parallel_jobs <= settings.max_jobs and settings.random_seed == cfg.seed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tuner.max_jobs=2", "tuner.max_parallel_jobs=4"],
         "tuner.max_parallel_jobs: 4 is more than tuner.max_jobs (2)"),
        (["tuner.strategy=Genetic"], "tuner.strategy: expected one of Bayesian, Random, "
                                     "Hyperband, Grid, got 'Genetic'"),
        (["tuner.max_jobs=0"], "tuner.max_jobs: expected a positive integer, got 0"),
        (["tuner.job_name=" + "x" * 33], "tuner.job_name: '" + "x" * 33 + "': a tuning job name "
                                         "has 1 to 32 characters"),
        (["tuner.wait=maybe"], "tuner.wait: expected true or false, got 'maybe'"),
        (["tuner.max_runtime=-5"], "tuner.max_runtime: expected a positive integer, got -5"),
        (["tuner.strategy=Hyperband", "tuner.hyperband.min_resource=9",
          "search_space.epochs.high=5"],
         "tuner.hyperband.min_resource: 9 is more than tuner.hyperband.max_resource (5)"),
    ],
)
def test_a_bad_sagemaker_setting_names_its_key(
    make_cfg: Callable[..., DictConfig], overrides: list[str], message: str,
) -> None:
    cfg = make_cfg(SAGEMAKER, *overrides, name="tune", tiny=False)
    with pytest.raises(BincountError) as err:
        SageMakerTunerSettings.from_cfg(cfg.tuner, cfg.objective)
    assert str(err.value) == message
