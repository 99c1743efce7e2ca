"""One Optuna trial: one call of ``train(cfg)``, returning the objective to the sweeper."""

from __future__ import annotations

import sys

import optuna
from omegaconf import DictConfig

from bincount.train import train
from bincount.tuning.optuna_sweep import Pruned


def objective(cfg: DictConfig) -> float | Pruned:
    """Train with this trial's overrides; the value is ``metrics[objective.metric]``, i.e. the
    best checkpoint's validation loss. Exceptions propagate: the sweeper records them. (The
    sweeper has checked the config's ``_target_``s once for the whole sweep.)"""
    if cfg.tuner.get("trial") is None:
        # Only a multirun gives a job its trial; without -m this would be a plain training run.
        print("error: scripts/tune.py runs a hyperparameter search: add -m "
              "(python scripts/tune.py -m ...); to train once use scripts/train.py",
              file=sys.stderr, flush=True)
        sys.exit(2)
    try:
        metrics = train(cfg)
    except optuna.TrialPruned as pruned:
        return Pruned(str(pruned))
    return float(metrics[cfg.objective.metric])
