"""Per-epoch pruning: each trial reports its validation loss to its study after every epoch.

The sweeper passes each job its trial number (``tuner.trial``); :class:`OptunaTrialCallback`
reopens that trial through the study's storage, reports the validation loss after every epoch
and raises ``optuna.TrialPruned`` when the pruner says so. Going through the storage (not a
Python object) keeps this working for launchers that run jobs in other processes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import optuna
import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.trainer.states import TrainerFn

from bincount.errors import BincountError
from bincount.tuning.settings import build_pruner

log = logging.getLogger(__name__)


class NonFiniteObjective(RuntimeError):
    """The monitored metric became NaN or infinite: the trial fails at once."""


def open_trial(storage: str, study_name: str, number: int,
               pruner: optuna.pruners.BasePruner) -> optuna.trial.Trial:
    """The running trial ``number`` of a stored study, with the study's pruner attached."""
    backend = optuna.storages.get_storage(storage)
    study = optuna.load_study(study_name=study_name, storage=backend, pruner=pruner)
    study_id = backend.get_study_id_from_name(study_name)
    trial_id = backend.get_trial_id_from_study_id_trial_number(study_id, number)
    return optuna.trial.Trial(study, trial_id)


class OptunaTrialCallback(pl.Callback):
    """Report ``monitor`` to this job's Optuna trial after each validation epoch; prune on the
    pruner's word. Without a trial number (a plain run) it does nothing."""

    def __init__(
        self,
        storage: str | None,
        study_name: str,
        trial: int | None,
        pruner: str | None,
        pruners: Mapping[str, Any] | None,
        monitor: str,
    ) -> None:
        self.storage, self.study_name, self.number = storage, study_name, trial
        self.pruner_name, self.pruners = pruner, pruners or {}
        self.monitor = monitor
        self.trial: optuna.trial.Trial | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.number is None or not trainer.is_global_zero:
            return
        if not self.storage:
            raise BincountError("tuner.storage: a trial reports to its study through a storage "
                                "URL (e.g. sqlite:///outputs/tune/study.db), got none")
        pruner = build_pruner(self.pruner_name, self.pruners)
        self.trial = open_trial(self.storage, self.study_name, int(self.number), pruner)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Only fit's epochs: train() validates the best checkpoint again after fit.
        if trainer.sanity_checking or self.number is None or trainer.state.fn != TrainerFn.FITTING:
            return
        prune = False
        if self.trial is not None:
            prune = self._report(trainer)
        # Every process of a distributed trial stops together, on rank 0's decision.
        if trainer.strategy.broadcast(prune, src=0):
            raise optuna.TrialPruned(f"pruned at epoch {trainer.current_epoch}")

    def _report(self, trainer: pl.Trainer) -> bool:
        assert self.trial is not None
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise BincountError(f"tuner: the monitored metric {self.monitor!r} was not logged "
                                f"(logged: {', '.join(sorted(trainer.callback_metrics))})")
        value, epoch = float(value), trainer.current_epoch
        if not math.isfinite(value):
            raise NonFiniteObjective(f"{self.monitor}={value} at epoch {epoch}")
        self.trial.report(value, step=epoch)
        if not self.trial.should_prune():
            return False
        log.info("trial %d pruned at epoch %d (%s=%.4f)", self.number, epoch, self.monitor, value)
        for logger in trainer.loggers:  # a completed run logs its hparams in train(); so does this
            if isinstance(logger, TensorBoardLogger):
                params = {key.replace(".", "/"): v for key, v in self.trial.params.items()}
                logger.log_hyperparams({**params, "trial": self.number, "pruned": True},
                                       metrics={self.monitor: value})
        return True
