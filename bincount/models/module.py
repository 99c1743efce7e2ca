"""The LightningModule: a torchvision ResNet with a new head over the counts (``model.head``:
softmax, or CORN's ordinal head; :mod:`bincount.models.heads`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytorch_lightning as pl
import torch
from torch import nn

from bincount.data.splits import SPLITS
from bincount.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from bincount.errors import BincountError, expect_bool
from bincount.models.backbone import build_net
from bincount.models.export import ModelSpec
from bincount.models.heads import check_head, head_loss
from bincount.models.metrics import CountMetrics

T = TypeVar("T")

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def mixed_precision() -> str:
    """``trainer=gpu``'s precision: bf16-mixed where the GPU has bfloat16 (Ampere and later: no
    loss scaling, fp32's range), 16-mixed (with loss scaling) on older GPUs such as the T4."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16-mixed"
    return "16-mixed"


class CountModule(pl.LightningModule):
    """Settings come from conf/model/ (the one source of their defaults); ``optimizer`` and
    ``scheduler`` are Hydra partials, absent when a checkpoint is loaded for evaluation.

    ``channels_last``: on a CUDA device the net and its inputs use NHWC (what tensor cores
    want; no effect on the CPU). ``compile``: the net's forward runs through ``torch.compile``
    (the exported weights and checkpoints are the plain net's). ``head``: ``softmax`` or
    ``ordinal`` (CORN); the net outputs class scores with either, and the loss is the head's
    (cross-entropy, or the CORN loss computed from the scores: :func:`head_loss`).
    """

    def __init__(
        self,
        *,
        arch: str,
        head: str,
        pretrained: bool,
        freeze_backbone: bool,
        counts: Sequence[int],
        image_size: int,
        channels_last: bool,
        compile: bool,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        expect_bool("model.pretrained", pretrained)
        expect_bool("model.freeze_backbone", freeze_backbone)
        expect_bool("model.channels_last", channels_last)
        expect_bool("model.compile", compile)
        check_head("model.head", head)
        if head == "ordinal" and list(counts) != sorted(counts):
            raise BincountError(f"model.head=ordinal: the counts must be in increasing order "
                                f"(their order is the ordinal scale), got {list(counts)}")
        # Hydra's _partial_ factories cannot be pickled, so they stay out of the checkpoint;
        # a module loaded for evaluation needs none.
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.counts = list(counts)
        self.net = build_net(arch, num_classes=len(self.counts), pretrained=pretrained, head=head)
        if freeze_backbone:
            for name, param in self.net.named_parameters():
                param.requires_grad = name.startswith("fc.")
        # Keys are not bare split names: "train" would shadow nn.Module.train.
        self.metrics = nn.ModuleDict(
            {f"{split}_metrics": CountMetrics(self.counts, split) for split in SPLITS}
        )
        self.val_batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        # Kept out of the module's children: state dicts hold the plain net's keys only.
        self.__dict__["_compiled"] = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last and images.is_cuda:
            if not self.net.conv1.weight.is_contiguous(memory_format=torch.channels_last):
                self.net.to(memory_format=torch.channels_last)  # in place: optimizers keep it
            images = images.contiguous(memory_format=torch.channels_last)
        if not self.hparams.compile:
            return self.net(images)
        if self.__dict__["_compiled"] is None:
            self.__dict__["_compiled"] = torch.compile(self.net)
        return self.__dict__["_compiled"](images)

    def spec(self) -> ModelSpec:
        """What serving needs to rebuild and feed this net."""
        return ModelSpec(
            arch=self.hparams.arch,
            image_size=int(self.hparams.image_size),
            mean=list(IMAGENET_MEAN),
            std=list(IMAGENET_STD),
            counts=self.counts,
            head=self.hparams.head,
        )

    def _step(self, batch: dict[str, Any], split: str) -> torch.Tensor | None:
        images, labels = batch["image"], batch["label"]
        if batch.get("skipped"):
            self.log(
                f"{split}_skipped_images",
                float(batch["skipped"]),
                reduce_fx="sum",
                on_step=False,
                on_epoch=True,
                batch_size=1,
            )
        if len(labels) == 0:  # every image of the batch was unreadable
            return None
        logits = self(images)
        loss = head_loss(self.hparams.head, logits, labels)
        self.metrics[f"{split}_metrics"].update(logits.detach(), labels)
        self.log(
            f"{split}_loss",
            loss,
            on_step=split == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=len(labels),
            sync_dist=split != "train",
        )
        if split == "val" and self.val_batch is None:
            self.val_batch = (images.detach().cpu(), labels.cpu(), logits.detach().cpu())
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        # Keep the first validation batch (images, labels, logits) for the figures callback.
        self.val_batch = None

    def _end_epoch(self, split: str) -> None:
        # compute() already syncs metric states across processes; sync_dist only averages
        # equal values (and tells Lightning the values are global).
        self.log_dict(self.metrics[f"{split}_metrics"].compute(), sync_dist=True)
        self.metrics[f"{split}_metrics"].reset()

    def on_train_epoch_end(self) -> None:
        self._end_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._end_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_epoch("test")

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            raise BincountError("model.optimizer is not set: training needs an optimizer")
        optimizer = _build("model.optimizer", self.optimizer_factory, params=params)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = _build("model.scheduler", self.scheduler_factory, optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }


def _build(key: str, factory: Callable[..., T], **kwargs: Any) -> T:
    """Call a config's ``_partial_`` factory; a value torch refuses (e.g. a negative or
    non-numeric lr) becomes a BincountError naming ``key``."""
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as err:
        raise BincountError(f"{key}: {err}") from err

