"""``name=<float>`` lines on stdout, the format SageMaker metric definitions parse
(``bincount.launchers.sagemaker.METRIC_REGEX``)."""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class MetricLines(pl.Callback):
    """After every training epoch print e.g. ``val_loss=0.81234``; at the end the best
    ``val_loss`` again, so the last value a parser sees is the run's objective.

    ``names`` comes from ``callbacks.metric_lines.names`` in ``conf/callbacks/default.yaml``,
    the one list of metric names (the SageMaker launcher's metric definitions read it too)."""

    def __init__(self, *, names: Sequence[str]) -> None:
        self.names = list(names)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        for name in self.names:
            value = metrics.get(f"{name}_epoch", metrics.get(name))
            if value is not None:
                print(f"epoch={trainer.current_epoch} {name}={float(value):.6f}", flush=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        if (
            trainer.is_global_zero
            and isinstance(checkpoint, ModelCheckpoint)
            and checkpoint.best_model_score is not None
        ):
            print(f"best val_loss={float(checkpoint.best_model_score):.6f}", flush=True)
