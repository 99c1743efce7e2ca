"""The Hydra sweeper plugins of ``tuner=optuna`` and ``tuner=sagemaker``.

Hydra imports this module for every app it starts (the ``hydra.plugins`` entry point in
pyproject.toml), so it stays light: the backends are imported when a sweep is built.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


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
