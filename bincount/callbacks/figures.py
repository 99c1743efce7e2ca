"""TensorBoard figures per validation epoch: the confusion matrix and a grid of validation
images titled with their true and predicted counts."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state
from pytorch_lightning.loggers import TensorBoardLogger


def confusion_figure(confusion: torch.Tensor, counts: list[int]) -> Figure:
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    ax.imshow(confusion.numpy(), cmap="Blues")
    for (row, col), value in zip(
        torch.cartesian_prod(torch.arange(len(counts)), torch.arange(len(counts))).tolist(),
        confusion.flatten().tolist(),
        strict=True,
    ):
        ax.text(col, row, str(int(value)), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(counts)), [str(c) for c in counts])
    ax.set_yticks(range(len(counts)), [str(c) for c in counts])
    ax.set_xlabel("predicted count")
    ax.set_ylabel("true count")
    fig.tight_layout()
    return fig


def image_grid_figure(
    images: torch.Tensor, true: list[int], pred: list[int], mean: list[float], std: list[float]
) -> Figure:
    n = len(images)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(2.2 * cols, 2.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    shown = images * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, t, p in zip(axes.flat, shown.clamp(0, 1), true, pred, strict=False):
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(f"true {t} / pred {p}", fontsize=9, color="green" if t == p else "red")
    fig.tight_layout()
    return fig


class ValidationFigures(pl.Callback):
    """The confusion matrix and up to ``max_images`` validation images (the first batch)."""

    def __init__(self, *, max_images: int) -> None:
        self.max_images = max_images

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.sanity_checking or not loggers:
            return
        # A collective under DDP, so every rank computes it. This hook runs before the
        # module's own epoch-end hook, so the metric states are still whole.
        confusion = pl_module.metrics["val_metrics"].confusion.compute().cpu()
        if not trainer.is_global_zero:
            return
        writer, step, counts = loggers[0].experiment, trainer.global_step, pl_module.counts
        writer.add_figure("val_confusion_matrix", confusion_figure(confusion, counts), step)
        if pl_module.val_batch is not None:
            images, labels, logits = pl_module.val_batch
            k = min(self.max_images, len(images))
            spec = pl_module.spec()
            true = [counts[i] for i in labels[:k].tolist()]
            pred = [counts[i] for i in logits[:k].argmax(1).tolist()]
            figure = image_grid_figure(images[:k], true, pred, spec.mean, spec.std)
            writer.add_figure("val_predictions", figure, step)
