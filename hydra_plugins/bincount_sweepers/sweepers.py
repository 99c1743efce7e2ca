"""The Hydra sweeper plugins of ``tuner=optuna`` and ``tuner=sagemaker``.

Hydra imports this module for every app it starts (the ``hydra.plugins`` entry point in
pyproject.toml), so it stays light: the backends are imported when a sweep is built.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from bincount.errors import BincountError


@contextmanager
def user_errors() -> Iterator[None]:
    """As scripts/ do: a user's mistake becomes one line on stderr and exit status 2."""
    try:
        yield
    except (BincountError, OmegaConfBaseException) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


class OptunaTrialSweeper(Sweeper):
    """Hydra's Optuna sweeper plus pruning, failure reasons and a results summary
    (see :mod:`bincount.tuning.optuna_sweep`); conf/tuner/optuna.yaml fills its arguments."""

    def __init__(self, search_space: DictConfig, objective: DictConfig, tuner: DictConfig) -> None:
        from bincount.tuning.optuna_sweep import OptunaTrialSweeperImpl

        self.sweeper = OptunaTrialSweeperImpl(search_space, objective, tuner)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)


class SageMakerTunerSweeper(Sweeper):
    """Starts one SageMaker tuning job over the launcher's estimator (see
    :mod:`bincount.tuning.sagemaker_tuner`); conf/tuner/sagemaker.yaml fills its arguments."""

    def __init__(self, search_space: DictConfig, objective: DictConfig, tuner: DictConfig) -> None:
        pass  # read from the composed config in sweep(), where the command line is known

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config

    def sweep(self, arguments: list[str]) -> Any:
        with user_errors():
            from bincount.tuning.sagemaker_tuner import run_sweep

            return run_sweep(self.config, arguments)
