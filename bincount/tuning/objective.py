"""One Optuna trial: one call of ``train(cfg)``, returning the objective to the sweeper."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import optuna
from omegaconf import DictConfig

from bincount.config import trusted_targets
from bincount.train import train


@dataclass(frozen=True)
class Pruned:
    """What a pruned trial returns (not an exception: Hydra would report it as a failed job)."""

    reason: str


def objective(cfg: DictConfig) -> float | Pruned:
    """Train with this trial's overrides; the value is ``metrics[objective.metric]``, i.e. the
    best checkpoint's validation loss. Exceptions propagate: the sweeper records them."""
    if cfg.tuner.get("trial") is None:
        # Only a multirun gives a job its trial; without -m this would be a plain training run.
        print("error: scripts/tune.py runs a hyperparameter search: add -m "
              "(python scripts/tune.py -m ...); to train once use scripts/train.py",
              file=sys.stderr, flush=True)
        sys.exit(2)
    with trusted_targets():
        try:
            metrics = train(cfg)
        except optuna.TrialPruned as pruned:
            return Pruned(str(pruned))
    return float(metrics[cfg.objective.metric])
