"""The Hydra sweeper plugins of ``tuner=optuna`` and ``tuner=sagemaker`` (Hydra's public
``Sweeper`` API); the work is in :mod:`bincount.tuning`, which never imports this module.

Hydra imports this module for every app it starts (it scans the ``hydra_plugins`` namespace),
so it stays light: the backends are imported when a sweep is built.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
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


def _check_targets(config: DictConfig) -> None:
    """Once per command, as cli.run does for the other scripts: only trusted ``_target_``s."""
    from bincount.config import check_targets

    check_targets(config)


class OptunaTrialSweeper(Sweeper):
    """``tuner=optuna``: trials of one persistent Optuna study, run by Hydra's launcher (see
    :mod:`bincount.tuning.optuna_sweep`); conf/tuner/optuna.yaml fills its arguments."""

    def __init__(self, search_space: DictConfig, objective: DictConfig, tuner: DictConfig) -> None:
        from bincount.tuning.search_space import optuna_distributions
        from bincount.tuning.settings import OptunaSettings

        with user_errors():  # bad settings stop before Hydra builds anything else
            self.settings = OptunaSettings.from_cfg(tuner, objective)
            self.space = optuna_distributions(search_space)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, batch: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Compose every job's config first (a bad override fails the batch with its message,
        not a traceback from inside the launcher), then launch them."""
        from bincount.tuning.settings import TuningError

        try:
            self.validate_batch_is_legal(batch)
        except HydraException as err:
            raise TuningError(f"the trials' overrides do not compose the config: {err}") from err
        return self.launcher.launch(batch, initial_job_idx=initial_job_idx)

    def sweep(self, arguments: list[str]) -> Any:
        from bincount.tuning.optuna_sweep import OptunaSweep

        with user_errors():
            _check_targets(self.config)
            sweep = OptunaSweep(self.settings, self.space, Path(self.config.hydra.sweep.dir),
                                self.launch)
            return sweep.run(arguments)


class SageMakerTunerSweeper(Sweeper):
    """``tuner=sagemaker``: one SageMaker tuning job over the launcher's estimator (see
    :mod:`bincount.tuning.sagemaker_tuner`); conf/tuner/sagemaker.yaml fills its arguments."""

    def __init__(self, search_space: DictConfig, objective: DictConfig, tuner: DictConfig) -> None:
        pass  # read from the composed config in sweep(), where the command line is known

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config

    def sweep(self, arguments: list[str]) -> Any:
        with user_errors():
            from bincount.tuning.sagemaker_tuner import run_sweep

            _check_targets(self.config)
            return run_sweep(self.config, arguments)
