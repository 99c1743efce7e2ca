"""The LightningDataModule: stratified train/val/test splits of an ABID-layout directory."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from bincount.cpus import usable_cpus
from bincount.data.abid import FILE_LIST, IMAGES, DataError
from bincount.data.cache import CachedBinDataset, cache_location, cache_ready, ensure_cache
from bincount.data.dataset import BinImageDataset, EpochSampler, collate_bins
from bincount.data.sources import SOURCES, LabelledSet, labelled_set
from bincount.data.splits import (
    MANIFEST,
    SPLITS,
    check_ratios,
    ensure_manifest,
    load_manifest,
    split_files,
)
from bincount.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    augment_batch,
    draw_params,
    eval_transform,
    normalize_batch,
    resize_transform,
    train_transform,
)
from bincount.errors import expect_bool, expect_int

AUGMENT = ("device", "cpu")
MAX_AUTO_WORKERS = 8


log = logging.getLogger(__name__)

class DataNotFoundError(DataError):
    """The data directory has no ABID data in it."""


class BinDataModule(pl.LightningDataModule):
    """Reads ``<data_dir>/{images,metadata}/``, ``file_list.json`` and the split manifest
    (``source=abid``), or a user's own photos (``source=folder``: ``<root>/<count>/*.jpg``;
    ``source=table``: a CSV/JSONL of path,count): from the source's labelled photo list on, the
    same manifest, cache and datasets. ``counts`` None: the counts the folder or table holds.

    With ``synthetic`` set (``per_class``, ``image_size``, ``seed``), ``prepare_data`` first renders
    a synthetic set in the same layout, so both kinds of data take the same path from here on.
    With ``cache`` true, images are decoded once into a memory-mapped cache under ``cache_dir``;
    with None (unset) the cache is read when it exists and is current, the JPEGs otherwise.

    ``augment=device``: loaders hand on uint8 batches at the training size and
    :meth:`on_after_batch_transfer` augments (training, seeded by (shuffle_seed, epoch, image))
    and normalizes them whole, on the device. ``augment=cpu``: the per-image torchvision
    transforms, in the loader.
    """

    def __init__(
        self,
        data_dir: str | Path | None,
        source: str,
        root: str | Path | None,
        table: str | None,
        counts: Sequence[int] | None,
        image_size: int,
        batch_size: int,
        num_workers: int | str,
        splits: Sequence[float],
        seed: int,
        shuffle_seed: int,
        overwrite_splits: bool,
        synthetic: dict[str, Any] | None,
        cache: bool | None,
        cache_dir: str | Path | None,
        augment: str,
    ) -> None:
        """The arguments are the ``data`` config (``conf/data/abid.yaml``), its one source."""
        super().__init__()
        # image_size >= 32: a ResNet halves its input five times (a 1-px image "trains" on noise).
        for key, value, least in (("batch_size", batch_size, 1), ("image_size", image_size, 32),
                                  ("seed", seed, 0), ("shuffle_seed", shuffle_seed, 0)):
            expect_int(f"data.{key}", value, least)
        if num_workers != "auto":
            expect_int("data.num_workers", num_workers, 0)
        if augment not in AUGMENT:
            raise DataError(f"data.augment: expected one of {', '.join(AUGMENT)}, got "
                            f"{augment!r}")
        if source not in SOURCES:
            raise DataError(f"data.source: expected one of {', '.join(SOURCES)}, got {source!r}")
        self.labelled: LabelledSet | None = None
        location = data_dir
        if source != "abid":  # the photos (and so the counts) are known before the model is built
            self.labelled = labelled_set(source=source, root=root, table=table,
                                         data_dir=data_dir, cache_dir=cache_dir)
            location = str(self.labelled.data_dir)  # (hparams, and checkpoints, hold plain types)
            log.info("data.%s: %s", source, self.labelled.summary())
            if counts is None:
                counts = self.labelled.counts
        if not location:
            raise DataError(f"data.data_dir: expected the data directory, got {data_dir!r}")
        if isinstance(counts, str) or not isinstance(counts, Sequence) or not counts:
            raise DataError(f"data.counts: expected a list of item counts, got {counts!r}")
        for n, count in enumerate(counts):
            expect_int(f"data.counts[{n}]", count, 0)
        if len(set(counts)) != len(counts):
            raise DataError(f"data.counts: expected distinct item counts, got {list(counts)}")
        check_ratios(splits, "data.splits")
        expect_bool("data.overwrite_splits", overwrite_splits)
        if cache is not None:
            expect_bool("data.cache", cache)
        if cache is True and not cache_dir:
            raise DataError(f"data.cache_dir: expected a directory (data.cache=true), got "
                            f"{cache_dir!r}")
        self.save_hyperparameters(logger=False)
        self.data_dir = Path(location)
        self.counts = list(counts)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.datasets: dict[str, Dataset] = {}

    def check_available(self) -> None:
        """Fail at once, before any model is built, when there is no data to read."""
        if self.labelled is not None:
            return  # scanned (and checked) when built
        if not self.hparams.synthetic and not (self.data_dir / FILE_LIST).is_file():
            raise DataNotFoundError(
                f"no ABID data in {self.data_dir.resolve()} (expected {FILE_LIST}, images/ and "
                "metadata/ there).\nDownload it with: python scripts/prepare_data.py "
                f"paths.data_dir={self.data_dir}\n"
                "or try the offline demo: python scripts/train.py experiment=demo"
            )

    def prepare_data(self) -> None:
        """Runs on one process only: render synthetic data if asked, write the manifest once."""
        if self.hparams.synthetic:
            from bincount.data.synthetic import render_synthetic

            render_synthetic(self.data_dir, counts=self.counts, **self.hparams.synthetic)
        self.check_available()
        if self.labelled is not None:
            for path, reason in self.labelled.skipped[:5]:
                log.warning("left out: %s: %s", path, reason)
            self.labelled.write_manifest(self.hparams.splits, self.hparams.seed,
                                         self.hparams.overwrite_splits)
        else:
            ensure_manifest(
                self.data_dir,
                self.hparams.splits,
                self.hparams.seed,
                overwrite=self.hparams.overwrite_splits,
            )
        if self.hparams.cache is True:
            ensure_cache(
                self.data_dir,
                self._cache_dir(),
                self.hparams.image_size,
                workers=max(1, self._workers()),
                progress=False,
            )

    def _cache_dir(self) -> Path:
        return Path(self.hparams.cache_dir)

    def uses_cache(self) -> bool:
        """True: the cache; None: the cache when it is current for these settings."""
        cache = self.hparams.cache
        if cache is None:
            return bool(self.hparams.cache_dir) and cache_ready(
                self.data_dir, self._cache_dir(), self.hparams.image_size)
        return bool(cache)

    def _workers(self) -> int:
        """``num_workers``; ``auto``: this process's CPUs (per device) less one, at most 8."""
        workers = self.hparams.num_workers
        if workers != "auto":
            return int(workers)
        per_process = usable_cpus() // max(1, self.trainer.world_size if self.trainer else 1)
        return max(0, min(MAX_AUTO_WORKERS, per_process - 1))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        manifest = load_manifest(self.data_dir / MANIFEST)
        left_out = Counter(c for split in SPLITS for _, c, _ in
                           split_files(self.data_dir, manifest, split) if c not in self.counts)
        if left_out:
            log.warning("%d images are left out: their counts are not in data.counts %s (%s)",
                        sum(left_out.values()), self.counts,
                        ", ".join(f"{n} with {c}" for c, n in sorted(left_out.items())))
        cached = self.uses_cache()
        for split in SPLITS:
            seed = self.hparams.shuffle_seed if split == "train" else None
            if self.hparams.augment == "device":  # uint8 at the training size, nothing random
                seed = None
                transform = None if cached else resize_transform(self.hparams.image_size)
            else:
                transform = (train_transform if split == "train" else eval_transform)(
                    self.hparams.image_size, self.mean, self.std
                )
            if cached:
                location = cache_location(self._cache_dir(), self.data_dir)
                dataset = CachedBinDataset(location, split, transform, self.counts, seed)
            else:
                items = self._present(
                    [item for item in split_files(self.data_dir, manifest, split)
                     if item[1] in self.counts], split
                )
                dataset = BinImageDataset(
                    items, self.data_dir / IMAGES, transform, self.counts, seed
                )
            if len(dataset) == 0 and split != "test":
                raise DataError(f"the {split} split of {self.data_dir / MANIFEST} has no images")
            self.datasets[split] = dataset

    def _present(
        self, items: list[tuple[str, int, Path]], split: str
    ) -> list[tuple[str, int, Path]]:
        """Leave out (with a warning) images the manifest lists but the disk lacks."""
        missing = {str(path) for _, _, path in items if not path.is_file()}
        if missing:
            warnings.warn(
                f"{len(missing)} {split} images listed in {self.data_dir / MANIFEST} are "
                f"missing from {self.data_dir} and are left out (first: {sorted(missing)[:5]})",
                stacklevel=2,
            )
        return [item for item in items if str(item[2]) not in missing]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``augment=device``: augment (training) and normalize the uint8 batch on its device."""
        if self.hparams.augment != "device" or not isinstance(batch, dict):
            return batch
        images = batch["image"]
        if self.trainer is not None and self.trainer.training:
            epoch = self.datasets["train"].epoch  # the sampler's: the epoch it shuffled for
            params = draw_params(self.hparams.shuffle_seed, epoch, batch["index"])
            images = augment_batch(images, params, self.mean, self.std)
        else:
            images = normalize_batch(images, self.mean, self.std)
        return {**batch, "image": images}

    def _loader(self, split: str, sampler: EpochSampler | None = None) -> DataLoader:
        workers, batch_size = self._workers(), self.hparams.batch_size
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            sampler=sampler,
            # A last training batch of one image would break BatchNorm: drop the remainder.
            drop_last=sampler is not None and len(sampler) > batch_size,
            num_workers=workers,
            # With per-image augmentation, fresh workers each epoch see the dataset's current
            # epoch; the batched path draws in the main process, so its workers may persist.
            persistent_workers=workers > 0 and self.hparams.augment == "device",
            collate_fn=collate_bins,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        trainer = self.trainer
        sampler = EpochSampler(
            dataset,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            seed=self.hparams.shuffle_seed,
        )
        # A resumed run asks for its loader before Lightning sets the epoch: set it here.
        sampler.set_epoch(trainer.current_epoch if trainer else 0)
        return self._loader("train", sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
