"""The LightningDataModule: stratified train/val/test splits of an ABID-layout directory."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from bincount.data.abid import FILE_LIST, IMAGES, DataError
from bincount.data.cache import CachedBinDataset, cache_location, ensure_cache
from bincount.data.dataset import BinImageDataset, EpochSampler, collate_bins
from bincount.data.splits import (
    MANIFEST,
    SPLITS,
    check_ratios,
    ensure_manifest,
    load_manifest,
    split_ids,
)
from bincount.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from bincount.errors import expect_bool, expect_int


class DataNotFoundError(DataError):
    """The data directory has no ABID data in it."""


class BinDataModule(pl.LightningDataModule):
    """Reads ``<data_dir>/{images,metadata}/``, ``file_list.json`` and the split manifest.

    With ``synthetic`` set (``per_class``, ``image_size``, ``seed``), ``prepare_data`` first renders
    a synthetic set in the same layout, so both kinds of data take the same path from here on.
    With ``cache``, images are decoded once into a memory-mapped cache under ``cache_dir``.
    """

    def __init__(
        self,
        data_dir: str | Path,
        counts: Sequence[int],
        image_size: int,
        batch_size: int,
        num_workers: int,
        splits: Sequence[float],
        seed: int,
        shuffle_seed: int,
        overwrite_splits: bool,
        synthetic: dict[str, Any] | None,
        cache: bool,
        cache_dir: str | Path | None,
    ) -> None:
        """The arguments are the ``data`` config (``conf/data/abid.yaml``), its one source."""
        super().__init__()
        for key, value, least in (("batch_size", batch_size, 1), ("image_size", image_size, 1),
                                  ("num_workers", num_workers, 0), ("seed", seed, 0),
                                  ("shuffle_seed", shuffle_seed, 0)):
            expect_int(f"data.{key}", value, least)
        if isinstance(counts, str) or not isinstance(counts, Sequence) or not counts:
            raise DataError(f"data.counts: expected a list of item counts, got {counts!r}")
        for n, count in enumerate(counts):
            expect_int(f"data.counts[{n}]", count, 0)
        if len(set(counts)) != len(counts):
            raise DataError(f"data.counts: expected distinct item counts, got {list(counts)}")
        check_ratios(splits, "data.splits")
        expect_bool("data.overwrite_splits", overwrite_splits)
        expect_bool("data.cache", cache)
        if cache and not cache_dir:
            raise DataError(f"data.cache_dir: expected a directory (data.cache=true), got "
                            f"{cache_dir!r}")
        self.save_hyperparameters(logger=False)
        self.data_dir = Path(data_dir)
        self.counts = list(counts)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.datasets: dict[str, Dataset] = {}

    def check_available(self) -> None:
        """Fail at once, before any model is built, when there is no data to read."""
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
        ensure_manifest(
            self.data_dir,
            self.hparams.splits,
            self.hparams.seed,
            overwrite=self.hparams.overwrite_splits,
        )
        if self.hparams.cache:
            ensure_cache(
                self.data_dir,
                self._cache_dir(),
                self.hparams.image_size,
                workers=max(1, self.hparams.num_workers),
                progress=False,
            )

    def _cache_dir(self) -> Path:
        return Path(self.hparams.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        manifest = load_manifest(self.data_dir / MANIFEST)
        for split in SPLITS:
            transform = (train_transform if split == "train" else eval_transform)(
                self.hparams.image_size, self.mean, self.std
            )
            seed = self.hparams.shuffle_seed if split == "train" else None
            if self.hparams.cache:
                location = cache_location(self._cache_dir(), self.data_dir)
                dataset = CachedBinDataset(location, split, transform, self.counts, seed)
            else:
                items = self._present(
                    [(i, c) for i, c in split_ids(manifest, split) if c in self.counts], split
                )
                dataset = BinImageDataset(
                    items, self.data_dir / IMAGES, transform, self.counts, seed
                )
            if len(dataset) == 0 and split != "test":
                raise DataError(f"the {split} split of {self.data_dir / MANIFEST} has no images")
            self.datasets[split] = dataset

    def _present(self, items: list[tuple[str, int]], split: str) -> list[tuple[str, int]]:
        """Leave out (with a warning) images the manifest lists but the disk lacks."""
        images_dir = self.data_dir / IMAGES
        missing = {i for i, _ in items if not (images_dir / f"{i}.jpg").is_file()}
        if missing:
            warnings.warn(
                f"{len(missing)} {split} images listed in {self.data_dir / MANIFEST} are "
                f"missing from {images_dir} and are left out (first: {sorted(missing)[:5]})",
                stacklevel=2,
            )
        return [item for item in items if item[0] not in missing]

    def _loader(self, split: str, sampler: EpochSampler | None = None) -> DataLoader:
        workers, batch_size = self.hparams.num_workers, self.hparams.batch_size
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            sampler=sampler,
            # A last training batch of one image would break BatchNorm: drop the remainder.
            drop_last=sampler is not None and len(sampler) > batch_size,
            num_workers=workers,
            # Not persistent: fresh workers each epoch see the dataset's current epoch.
            persistent_workers=False,
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
