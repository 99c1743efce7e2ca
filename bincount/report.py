"""The results table printed at the end of training and evaluation, and metrics.json."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bincount.files import write_json_atomic

SUMMARY = ("acc", "rmse", "mae", "within1_acc", "loss")
# Rows shown where a run has them: expected calibration error of the raw and the calibrated
# probabilities (bincount.calibrate).
CALIBRATION = ("ece", "ece_calibrated")


def collect_metrics(
    results: Mapping[str, Mapping[str, float]], counts: Sequence[int]
) -> dict[str, Any]:
    """Flatten ``{"val": {...}, "test": {...}}`` as returned by Lightning into metrics.json form:
    ``val_loss``, ``test_acc``, ... and ``<split>_per_class_acc = {"1": acc, ...}``."""
    metrics: dict[str, Any] = {}
    for split, values in results.items():
        for key in SUMMARY:
            if f"{split}_{key}" in values:
                metrics[f"{split}_{key}"] = float(values[f"{split}_{key}"])
        metrics[f"{split}_per_class_acc"] = {
            str(c): float(values[f"{split}_acc_count{c}"])
            for c in counts
            if f"{split}_acc_count{c}" in values
        }
    return metrics


def write_metrics(path: Path, metrics: Mapping[str, Any]) -> None:
    """metrics.json; a value that is NaN or infinite (not JSON) is written as null and its
    key listed under ``non_finite``."""
    clean, bad = _finite(dict(metrics), "")
    if bad:
        clean["non_finite"] = bad
    write_json_atomic(Path(path), clean)


def _finite(value: Any, key: str) -> tuple[Any, list[str]]:
    if isinstance(value, float) and not math.isfinite(value):
        return None, [key]
    if isinstance(value, dict):
        out, bad = {}, []
        for k, v in value.items():
            out[k], sub = _finite(v, f"{key}.{k}" if key else str(k))
            bad += sub
        return out, bad
    return value, []


def print_results(metrics: Mapping[str, Any], where: Mapping[str, Any] | None = None) -> None:
    splits = [s for s in ("val", "test") if f"{s}_acc" in metrics]
    table = Table(title="bincount results")
    table.add_column("metric")
    for split in splits:
        table.add_column(split, justify="right")
    for key in SUMMARY:
        table.add_row(key, *(f"{metrics.get(f'{s}_{key}', float('nan')):.4f}" for s in splits))
    for key in CALIBRATION:
        if any(f"{s}_{key}" in metrics for s in splits):
            table.add_row(key.replace("_", " "), *(
                f"{metrics[f'{s}_{key}']:.4f}" if metrics.get(f"{s}_{key}") is not None else "-"
                for s in splits))
    counts = sorted({c for s in splits for c in metrics.get(f"{s}_per_class_acc", {})}, key=int)
    for count in counts:
        table.add_row(
            f"acc (count {count})",
            *(f"{metrics[f'{s}_per_class_acc'].get(count, float('nan')):.4f}" for s in splits),
        )
    console = Console(width=100)
    console.print(table)
    if "temperature" in metrics:
        console.print(f"temperature: {metrics['temperature']:.4f} (fitted on val: "
                      "probabilities = softmax(scores / temperature))")
    if "reconcile_settled" in metrics:
        error = metrics["reconcile_settled_error"]
        console.print(
            f"reconciliation ({metrics['reconcile_split']}): "
            f"{100 * metrics['reconcile_settled']:.1f}% of the pairs settled automatically"
            + (f", {100 * error:.1f}% of them wrongly" if error is not None else "")
            + f"; {100 * metrics['reconcile_review']:.1f}% left for review"
            + "".join(f"; '{v}' never given (target not reachable)"
                      for v in metrics["reconcile_never_given"]))
    for name, location in (where or {}).items():
        console.print(f"{name}: {location}", soft_wrap=True)
