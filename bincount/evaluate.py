"""``evaluate(cfg)``: the test-split figures of a checkpoint, as a warehouse would use it.

Besides the counting metrics it prints two tables and writes them into ``metrics.json``:

- risk-coverage: the accuracy when the model answers only its most confident images, at 100,
  80, 60, 40 and 20% coverage (confidence = the largest calibrated probability);
- reconciliation: every test image paired once with its true count and once with a wrong
  expected count (+-1 or +-2, drawn with a fixed seed: ``reconcile.reconciliation_pairs``), and
  what the verdicts do with them: the share settled automatically (match or mismatch), the error
  rate among those, the share left for review, and each verdict's precision.

The temperature and the thresholds are fitted here on the checkpoint's validation split, exactly
as ``train(cfg)`` fits them for ``model.json``: a checkpoint does not know where its model
directory went (on SageMaker they are in different places), the fit is deterministic, so the best
checkpoint gets the values its exported model holds, and ``reconcile.*`` overrides can be tried
without retraining. With ``tta=hflip`` the probabilities are the mean over each image and its
mirror, and the thresholds are fitted on those (the temperature on the plain scores, as every
runtime applies it).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from bincount.calibrate import (
    RELIABILITY_PNG,
    RISK_COVERAGE_PNG,
    ReconcileSettings,
    calibration_metrics,
    fit_calibration,
    reliability_plot,
    save_figure,
    score_split,
    split_metrics,
)
from bincount.config import build
from bincount.data.datamodule import BinDataModule
from bincount.errors import BincountError
from bincount.models.calibration import risk_coverage, risk_coverage_figure
from bincount.models.module import CountModule
from bincount.report import collect_metrics, print_results, write_metrics
from bincount.serving.settings import tta_choice

# Settings added after bincount 0.1's first checkpoints, with the values that reproduce how
# those were trained: such a checkpoint still evaluates.
ADDED_MODEL_SETTINGS: dict[str, Any] = {"head": "softmax"}
ADDED_DATA_SETTINGS: dict[str, Any] = {"source": "abid", "root": None, "table": None}


def _missing(saved: dict[str, Any] | None, added: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in added.items() if key not in (saved or {})}


def _load(cfg: DictConfig, ckpt_path: Path) -> tuple[CountModule, BinDataModule]:
    datamodule = build(cfg.data) if cfg.get("data") else None
    try:
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model = CountModule.load_from_checkpoint(
            ckpt_path, map_location="cpu", pretrained=False, weights_only=True,
            **_missing(saved.get("hyper_parameters"), ADDED_MODEL_SETTINGS))
        if datamodule is None:
            datamodule = BinDataModule.load_from_checkpoint(
                ckpt_path, weights_only=True,
                **_missing(saved.get("datamodule_hyper_parameters"), ADDED_DATA_SETTINGS))
    except BincountError:
        raise
    except Exception as err:  # whatever torch or Lightning make of a file that is not one
        raise BincountError(
            f"ckpt_path: {ckpt_path} is not a checkpoint of a bincount run (expected "
            f"<run>/checkpoints/best.ckpt or last.ckpt; <run>/model/ is for serving; "
            f"loading it raised {type(err).__name__})"
        ) from err
    return model, datamodule


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test-split metrics of a checkpoint, calibrated, with the risk-coverage and reconciliation
    tables. The data comes from the checkpoint's own data settings unless a ``data`` config is
    given. Returns the metrics (also in ``<output_dir>/metrics.json``)."""
    ckpt_path = Path(cfg.ckpt_path)
    if not ckpt_path.is_file():
        raise BincountError(f"ckpt_path: no checkpoint at {ckpt_path}")
    settings = ReconcileSettings.from_cfg(cfg)
    tta = tta_choice("tta", cfg.get("tta"))  # as predict and serve check it
    model, datamodule = _load(cfg, ckpt_path)
    datamodule.check_available()
    trainer: pl.Trainer = build(cfg.trainer, logger=False)  # where the net runs
    datamodule.prepare_data()
    datamodule.setup("test")

    device = trainer.strategy.root_device
    scored = {split: score_split(model.net, datamodule, split, device, mirrored=tta == "hflip")
              for split in ("val", "test")}
    # The counting metrics are the net's own (without TTA), as a trainer's test pass gives them.
    plain = replace(scored["test"], mirrored=None)
    metrics = collect_metrics({"test": split_metrics(plain, model.counts, model.hparams.head,
                                                     "test")}, model.counts)
    calibration = fit_calibration(scored["val"], model.counts, settings)
    metrics.update(calibration_metrics(scored, calibration, model.counts))
    probs, labels = scored["test"].probs(calibration.temperature), scored["test"].labels
    metrics["tta"] = tta
    metrics["test_acc_tta"] = float((probs.argmax(1) == labels).float().mean())
    metrics["test_risk_coverage"] = {f"{round(c * 100)}%": acc
                                     for c, acc in risk_coverage(probs, labels).items()}

    output_dir = Path(cfg.paths.output_dir)
    write_metrics(output_dir / "metrics.json", metrics)
    title = f"test split, tta={tta}"
    places = {
        "checkpoint": ckpt_path,
        "metrics": output_dir / "metrics.json",
        "reliability": save_figure(reliability_plot(scored["test"], calibration.temperature,
                                                    "test"), output_dir / RELIABILITY_PNG),
        "risk_coverage": save_figure(risk_coverage_figure(probs, labels, title),
                                     output_dir / RISK_COVERAGE_PNG),
    }
    print_results(metrics)
    print_tables(metrics)
    console = Console(width=100)
    for name, location in places.items():
        console.print(f"{name}: {location}", soft_wrap=True)
    return metrics


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def print_tables(metrics: dict[str, Any]) -> None:
    """The risk-coverage and the reconciliation tables of an evaluation's metrics."""
    console = Console(width=100)
    coverage = Table(title=f"risk-coverage (test split, tta={metrics['tta']})", min_width=72,
                     caption="accuracy when only the most confident images are answered")
    coverage.add_column("coverage")
    coverage.add_column("accuracy", justify="right")
    for share, acc in metrics["test_risk_coverage"].items():
        coverage.add_row(share, _pct(acc))
    console.print(coverage)

    r = {k.removeprefix("reconcile_"): v for k, v in metrics.items() if k.startswith("reconcile_")}
    table = Table(title=f"reconciliation ({r['split']} split, {r['pairs']} pairs)", min_width=72,
                  caption="each image with its true count and with a wrong one (+-1 or +-2)")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("settled automatically (match + mismatch)", _pct(r["settled"]))
    table.add_row("error rate among the settled", _pct(r["settled_error"]))
    table.add_row("left for review", _pct(r["review"]))
    for name in ("match", "mismatch"):
        threshold = r[f"{name}_threshold"]
        sign = ">=" if name == "match" else "<="
        rule = "never given" if threshold is None else f"p_expected {sign} {threshold:.4f}"
        table.add_row(f"{name}: {rule}", f"{_pct(r[f'{name}_share'])} of pairs, precision "
                                         f"{_pct(r[f'{name}_precision'])}")
    console.print(table)
    for name in r["never_given"]:
        console.print(f"verdict '{name}' is never given: no threshold reaches "
                      f"reconcile.{name}_precision={r[f'{name}_target']} on the validation "
                      "split")
