"""``train(cfg)``: the one training recipe, run as is by every launcher and every tuning trial.

Read top to bottom: lock the output dir, seed, data, model, trainer, fit (resuming from a
verified last.ckpt if there is one), score val and test once with the best checkpoint (the
metrics), calibrate it (the temperature and the reconciliation thresholds, fitted on
validation), export the model, write metrics.json. A run that a rule stopped, or whose best
validation loss is not finite, exports nothing and fails.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from bincount.calibrate import (
    RELIABILITY_PNG,
    ReconcileSettings,
    calibration_metrics,
    fit_calibration,
    reliability_plot,
    save_figure,
    score_split,
    split_metrics,
)
from bincount.callbacks.rules.base import Rule
from bincount.checkpoints import AtomicCheckpointIO, remove_orphans, resume_checkpoint
from bincount.config import build
from bincount.data.datamodule import BinDataModule
from bincount.errors import BincountError, expect_int
from bincount.models.export import export_model
from bincount.models.module import CountModule
from bincount.monitoring.baseline import write_baseline
from bincount.report import collect_metrics, print_results, write_metrics
from bincount.runlock import output_dir_lock

log = logging.getLogger(__name__)


class TrainingFailed(BincountError):
    """The run finished without a usable model (a rule stopped it, or it diverged)."""

    exit_code = 1


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate each entry of a group like ``callbacks`` or ``logger`` (null entries skipped)."""
    if not group:
        return []
    return [build(entry) for entry in group.values() if entry and "_target_" in entry]


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The knobs that describe a run, for TensorBoard's HPARAMS tab."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return {
        "seed": resolved["seed"],
        "model": {k: v for k, v in resolved["model"].items() if k != "_target_"},
        "data": {k: v for k, v in resolved["data"].items() if k not in ("_target_", "data_dir")},
        "trainer": {k: v for k, v in resolved["trainer"].items() if k != "_target_"},
    }


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, validate and test; returns the final metrics (also in ``<output_dir>/metrics.json``)."""
    output_dir = Path(cfg.paths.output_dir)
    epochs = cfg.trainer.get("max_epochs")  # Lightning only asserts on a bad value, mid-fit
    if epochs not in (None, -1):  # -1: no limit
        expect_int("trainer.max_epochs", epochs, 1)
    expect_int("seed", cfg.seed, 0)
    settings = ReconcileSettings.from_cfg(cfg)  # refused now, not after the fit
    # The process that starts the run holds the lock; DDP's other ranks run inside it.
    first_rank = int(os.environ.get("LOCAL_RANK", "0")) == 0
    with output_dir_lock(output_dir) if first_rank else nullcontext():
        return _train(cfg, output_dir, settings)


def _train(cfg: DictConfig, output_dir: Path, settings: ReconcileSettings) -> dict[str, Any]:
    pl.seed_everything(cfg.seed, workers=True)
    datamodule: BinDataModule = build(cfg.data)
    datamodule.check_available()
    model: CountModule = build(cfg.model, counts=datamodule.counts)  # the data's counts
    callbacks = instantiate_group(cfg.get("callbacks"))
    callbacks += instantiate_group(cfg.get("rules"))  # conf/rules: the Debugger-style rules
    loggers: list[Logger] = instantiate_group(cfg.get("logger"))
    profiler = build(cfg.profiler) if cfg.get("profiler") else None  # conf/profiler
    trainer: pl.Trainer = build(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, profiler=profiler,
        plugins=[AtomicCheckpointIO()],
    )

    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)
                       and c.monitor is not None), None)
    checkpoint_dir = Path(checkpoint.dirpath) if checkpoint else output_dir / "checkpoints"
    remove_orphans(checkpoint_dir)
    trainer.fit(
        model,
        datamodule=datamodule,
        ckpt_path=resume_checkpoint(cfg.get("ckpt_path"), checkpoint_dir),
        weights_only=True,
    )

    failure = _failure(trainer, callbacks, checkpoint)
    if failure is not None:
        metrics = {"status": "failed", "failure": failure, "epochs": trainer.current_epoch,
                   **collect_metrics(dict.fromkeys(("train", "val"), _logged(trainer)),
                                     model.counts)}
        if trainer.is_global_zero:
            write_metrics(output_dir / "metrics.json", metrics)
        raise TrainingFailed(f"training failed: {failure}; no model was exported "
                             f"(see {output_dir / 'metrics.json'})")

    best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    metrics: dict[str, Any] = {"best_checkpoint": best, "epochs": trainer.current_epoch,
                               "status": "ok"}
    if trainer.is_global_zero:
        if best:  # the best checkpoint's weights are what is measured and exported
            model.load_state_dict(torch.load(best, map_location="cpu",
                                             weights_only=True)["state_dict"])
        # One pass over val and test with the best model gives the metrics; the temperature
        # and the thresholds are fitted on val, measured on test; the first val images check
        # the ONNX export. Val's mirrors too: a server with tta=hflip decides by thresholds
        # fitted on those.
        device = trainer.strategy.root_device
        mirrored = score_split(model.net, datamodule, "val", device, mirrored=True)
        scored = {"val": replace(mirrored, mirrored=None),
                  "test": score_split(model.net, datamodule, "test", device)}
        metrics = {**collect_metrics({split: split_metrics(s, model.counts, model.hparams.head,
                                                           split)
                                      for split, s in scored.items()}, model.counts), **metrics}
        calibration = fit_calibration(scored["val"], model.counts, settings)
        hflip = fit_calibration(mirrored, model.counts, settings)
        metrics.update(calibration_metrics(scored, calibration, model.counts))
        spec = replace(model.spec(), temperature=calibration.temperature,
                       reconcile=calibration.thresholds.to_record(),
                       reconcile_hflip=hflip.thresholds.to_record())
        model_dir = export_model(model.net, spec, Path(cfg.paths.model_dir),
                                 samples=scored["val"].first_images)
        # What scripts/monitor.py compares against (calibrated, as the endpoint answers).
        write_baseline(model, datamodule, model_dir)
        write_metrics(output_dir / "metrics.json", metrics)
        reliability = reliability_plot(scored["test"], calibration.temperature, "test")
        places: dict[str, Any] = {"checkpoints": checkpoint_dir,
                                  "reliability": save_figure(reliability,
                                                             output_dir / RELIABILITY_PNG)}
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("reliability", reliability, close=False)
                scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
                logger.log_hyperparams(hyperparameters(cfg), metrics=scalars)
                logger.finalize("success")
                places["tensorboard"] = f"tensorboard --logdir {logger.save_dir}"
        places.update(model=model_dir, metrics=output_dir / "metrics.json")
        print_results(metrics, places)
    return metrics


def _failure(trainer: pl.Trainer, callbacks: list[Any],
             checkpoint: ModelCheckpoint | None) -> str | None:
    """Why the fit left no usable model, or None."""
    # Early stopping (Overtraining, Overfit) keeps the best checkpoint; the others are failures.
    stopped = [c.name for c in callbacks if isinstance(c, Rule) and c.fired and c.stop_training
               and c.stop_is_failure]
    if stopped:
        return f"rule {', '.join(stopped)} stopped training at step {trainer.global_step}"
    if checkpoint is None:
        return None
    score = checkpoint.best_model_score
    if score is None or not math.isfinite(float(score)):
        value = "never computed" if score is None else f"{float(score)}"
        return f"the best {checkpoint.monitor} is {value} (the run diverged)"
    return None


def _logged(trainer: pl.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

