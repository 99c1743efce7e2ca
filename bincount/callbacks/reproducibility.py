"""Per-epoch seeding, so that a run resumed from ``last.ckpt`` replays exactly."""

from __future__ import annotations

import pytorch_lightning as pl
from lightning_fabric.utilities.seed import seed_everything


class EpochSeed(pl.Callback):
    """Re-seed every RNG at the start of each training epoch from ``(seed, epoch)``.

    Lightning checkpoints hold no RNG state; without this a run resumed at epoch k would draw
    other shuffles and augmentations than the uninterrupted run did from epoch k on.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed_everything(self.seed + trainer.current_epoch, workers=True, verbose=False)
