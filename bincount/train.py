"""``train(cfg)``: the one training recipe, run as is by every launcher and every tuning trial.

Read top to bottom: seed, data, model, trainer, fit (resuming if a last.ckpt is there),
validate and test the best checkpoint, export the model, write metrics.json.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from bincount.config import build
from bincount.data.datamodule import BinDataModule
from bincount.errors import BincountError, expect_int
from bincount.models.export import export_model
from bincount.models.module import CountModule
from bincount.report import collect_metrics, print_results, write_metrics

log = logging.getLogger(__name__)

LAST = "last.ckpt"


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate each entry of a group like ``callbacks`` or ``logger`` (null entries skipped)."""
    if not group:
        return []
    return [build(entry) for entry in group.values() if entry and "_target_" in entry]


def resume_checkpoint(ckpt_path: str | None, checkpoint_dir: Path) -> str | None:
    """``"last"`` or unset with a last.ckpt present -> that file; else the given path."""
    last = checkpoint_dir / LAST
    if ckpt_path is None:
        if last.is_file():
            log.info("resuming from %s", last)
            return str(last)
        return None
    path = last if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        raise BincountError(f"ckpt_path: no checkpoint at {path}")
    return str(path)


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
    pl.seed_everything(cfg.seed, workers=True)

    datamodule: BinDataModule = build(cfg.data)
    datamodule.check_available()
    model: CountModule = build(cfg.model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    callbacks += instantiate_group(cfg.get("rules"))  # conf/rules: the Debugger-style rules
    loggers: list[Logger] = instantiate_group(cfg.get("logger"))
    profiler = build(cfg.profiler) if cfg.get("profiler") else None  # conf/profiler
    trainer: pl.Trainer = build(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, profiler=profiler
    )

    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    checkpoint_dir = Path(checkpoint.dirpath) if checkpoint else output_dir / "checkpoints"
    trainer.fit(
        model,
        datamodule=datamodule,
        ckpt_path=resume_checkpoint(cfg.get("ckpt_path"), checkpoint_dir),
    )

    # Validate and test the best checkpoint; this also loads its weights into `model`.
    best = "best" if checkpoint and checkpoint.best_model_path else None
    val = trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)[0]
    test = trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)[0]
    metrics = collect_metrics({"val": val, "test": test}, model.counts)
    metrics["best_checkpoint"] = checkpoint.best_model_path if best else None
    metrics["epochs"] = trainer.current_epoch

    if trainer.is_global_zero:
        model_dir = export_model(model.net, model.spec(), Path(cfg.paths.model_dir))
        write_metrics(output_dir / "metrics.json", metrics)
        places: dict[str, Any] = {"checkpoints": checkpoint_dir}
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
                logger.log_hyperparams(hyperparameters(cfg), metrics=scalars)
                logger.finalize("success")
                places["tensorboard"] = f"tensorboard --logdir {logger.save_dir}"
        places.update(model=model_dir, metrics=output_dir / "metrics.json")
        print_results(metrics, places)
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test-split metrics of a checkpoint. The data comes from the checkpoint's own data
    settings unless a ``data`` config is given."""
    ckpt_path = Path(cfg.ckpt_path)
    if not ckpt_path.is_file():
        raise BincountError(f"ckpt_path: no checkpoint at {ckpt_path}")
    datamodule = build(cfg.data) if cfg.get("data") else None
    try:
        model = CountModule.load_from_checkpoint(ckpt_path, map_location="cpu", pretrained=False)
        if datamodule is None:
            datamodule = BinDataModule.load_from_checkpoint(ckpt_path)
    except BincountError:
        raise
    except Exception as err:  # whatever torch or Lightning make of a file that is not one
        raise BincountError(
            f"ckpt_path: {ckpt_path} is not a checkpoint of a bincount run (expected "
            f"<run>/checkpoints/best.ckpt or last.ckpt; <run>/model/ is for serving; "
            f"loading it raised {type(err).__name__})"
        ) from err
    datamodule.check_available()
    trainer: pl.Trainer = build(cfg.trainer, logger=False)
    test = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    metrics = collect_metrics({"test": test}, model.counts)
    output_dir = Path(cfg.paths.output_dir)
    write_metrics(output_dir / "metrics.json", metrics)
    print_results(metrics, {"checkpoint": ckpt_path, "metrics": output_dir / "metrics.json"})
    return metrics
