"""The DataModule, built from the data config as training builds it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import DictConfig

from bincount.config import build
from bincount.data.abid import DataError
from bincount.data.datamodule import BinDataModule, DataNotFoundError
from bincount.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_batch
from bincount.errors import BincountError


@pytest.fixture
def datamodule(make_cfg: Callable[..., DictConfig]) -> Callable[..., BinDataModule]:
    """``conf/data/abid.yaml`` over a data dir, with overrides, built as train builds it."""

    def _make(data_dir: Path, *overrides: str) -> BinDataModule:
        cfg = make_cfg("data=abid", f"paths.data_dir={data_dir}", "data.num_workers=0",
                       *overrides, tiny=False)
        return build(cfg.data)

    return _make


def test_datamodule_reads_real_abid_photos(
    abid_dir: Path, datamodule: Callable[..., BinDataModule]
) -> None:
    dm = datamodule(abid_dir, "data.image_size=64", "data.batch_size=8")
    dm.prepare_data()
    dm.setup()
    sizes = {split: len(ds) for split, ds in dm.datasets.items()}
    assert sum(sizes.values()) == 245
    assert sizes["train"] > sizes["val"] > 0 and sizes["test"] > 0
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 64, 64)
    assert batch["label"].min() >= 0 and batch["label"].max() <= 4
    assert all(isinstance(i, str) and len(i) == 5 for i in batch["id"])


def test_counts_the_config_does_not_list_are_reported_with_how_many(
    abid_dir: Path, datamodule: Callable[..., BinDataModule], caplog: pytest.LogCaptureFixture
) -> None:
    dm = datamodule(abid_dir, "data.image_size=32", "data.counts=[1,2,3]")
    dm.prepare_data()
    dm.setup()
    left = [r.getMessage() for r in caplog.records if "are left out" in r.getMessage()]
    assert len(left) == 1 and "not in data.counts [1, 2, 3]" in left[0]
    kept = sum(len(ds) for ds in dm.datasets.values())
    dropped = int(left[0].split()[0])
    assert kept + dropped == 245 and dropped > 0  # every 1-5 photo of the sample is counted
    assert " with 4" in left[0] and " with 5" in left[0]


def test_missing_data_names_the_directory_and_the_command(
    tmp_path: Path, datamodule: Callable[..., BinDataModule]
) -> None:
    dm = datamodule(tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError) as err:
        dm.check_available()
    assert str((tmp_path / "nowhere").resolve()) in str(err.value)
    assert "python scripts/prepare_data.py" in str(err.value)


def test_missing_images_are_left_out(
    abid_dir: Path, tmp_path: Path, datamodule: Callable[..., BinDataModule]
) -> None:
    data = tmp_path / "abid"
    shutil.copytree(abid_dir, data)
    gone = sorted((data / "images").glob("*.jpg"))[:3]
    for path in gone:
        path.unlink()
    dm = datamodule(data, "data.image_size=32")
    dm.prepare_data()
    with pytest.warns(UserWarning, match="missing from"):
        dm.setup()
    assert sum(len(ds) for ds in dm.datasets.values()) == 245 - 3


def test_cached_datamodule_yields_what_the_jpeg_one_does(
    abid_dir: Path, tmp_path: Path, datamodule: Callable[..., BinDataModule]
) -> None:
    loaders = []
    for cache in ("false", "true"):
        dm = datamodule(abid_dir, "data.image_size=32", "data.batch_size=16",
                        f"data.cache={cache}", f"data.cache_dir={tmp_path}")
        dm.prepare_data()
        dm.setup()
        loaders.append(dm.val_dataloader())
    jpeg, cached = (next(iter(loader)) for loader in loaders)
    assert jpeg["id"] == cached["id"] and torch.equal(jpeg["label"], cached["label"])
    # The cache holds the training square: the loaders hand on the very same uint8 batch.
    assert cached["image"].dtype == torch.uint8 and cached["image"].shape == (16, 3, 32, 32)
    assert torch.equal(jpeg["image"], cached["image"])
    assert list(tmp_path.rglob("*.u8")), "the cache files were written under cache_dir"


def test_an_unset_cache_is_read_when_it_is_current_and_skipped_otherwise(
    abid_dir: Path, tmp_path: Path, datamodule: Callable[..., BinDataModule]
) -> None:
    data = tmp_path / "abid"
    shutil.copytree(abid_dir, data)
    unset = ("data.image_size=32", "data.cache=null", f"data.cache_dir={tmp_path / 'c'}")
    dm = datamodule(data, *unset)
    dm.prepare_data()
    assert not dm.uses_cache()  # nothing built yet: the JPEGs, and no cache written
    assert not list(tmp_path.rglob("*.u8"))
    datamodule(data, *unset, "data.cache=true").prepare_data()
    assert dm.uses_cache()
    assert not datamodule(data, *unset[1:], "data.image_size=40").uses_cache()  # other size
    assert not datamodule(data, *unset, "data.cache=false").uses_cache()


def test_device_augmentation_draws_per_image_from_seed_epoch_and_index(
    abid_dir: Path, tmp_path: Path, datamodule: Callable[..., BinDataModule]
) -> None:
    dm = datamodule(abid_dir, "data.image_size=32", "data.batch_size=8", "data.shuffle_seed=3")
    dm.prepare_data()
    dm.setup()
    dm.trainer = SimpleNamespace(training=True, world_size=1, global_rank=0, current_epoch=0)
    batch = next(iter(dm.train_dataloader()))
    first = dm.on_after_batch_transfer(batch, 0)["image"]
    assert first.dtype == torch.float32 and first.shape == (8, 3, 32, 32)
    # Image i's augmentation is its own: the same in another batch of other images.
    alone = dm.on_after_batch_transfer({**batch, "image": batch["image"][2:3],
                                        "index": batch["index"][2:3]}, 0)["image"]
    assert torch.allclose(alone[0], first[2], atol=1e-5)
    torch.manual_seed(99)  # the global generator plays no part
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)["image"], first)
    dm.datasets["train"].epoch = 1
    assert not torch.allclose(dm.on_after_batch_transfer(batch, 0)["image"], first)
    dm.trainer.training = False  # validation, test: normalized, not augmented
    plain = dm.on_after_batch_transfer(batch, 0)["image"]
    assert torch.equal(plain, normalize_batch(batch["image"], IMAGENET_MEAN, IMAGENET_STD))


def test_cpu_augmentation_keeps_the_per_image_transforms(
    abid_dir: Path, datamodule: Callable[..., BinDataModule]
) -> None:
    dm = datamodule(abid_dir, "data.image_size=32", "data.batch_size=4", "data.augment=cpu")
    dm.prepare_data()
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].dtype == torch.float32
    assert dm.on_after_batch_transfer(batch, 0) is batch


def test_auto_workers_leave_one_cpu_and_persist_with_the_batched_path(
    abid_dir: Path, datamodule: Callable[..., BinDataModule], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    dm = datamodule(abid_dir, "data.image_size=32", "data.num_workers=auto")
    dm.prepare_data()
    dm.setup()
    loader = dm.val_dataloader()
    assert loader.num_workers == 3 and loader.persistent_workers
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert dm.val_dataloader().num_workers == 8


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.batch_size=0"], "data.batch_size: expected an integer >= 1, got 0"),
        (["data.image_size=1"], "data.image_size: expected an integer >= 32, got 1"),
        (["data.shuffle_seed=-1"], "data.shuffle_seed: expected an integer >= 0, got -1"),
        (["data.counts=[1,2,2]"], "data.counts: expected distinct item counts, got [1, 2, 2]"),
        (["data.counts=[1,two]"], "data.counts[1]: expected an integer >= 0, got 'two'"),
        (["data.splits=[0.8,0.3,0.1]"],
         "data.splits: expected three non-negative numbers summing to 1, got [0.8, 0.3, 0.1]"),
        (["data.overwrite_splits=maybe"], "data.overwrite_splits: expected true or false"),
        (["data.augment=gpu"], "data.augment: expected one of device, cpu, got 'gpu'"),
        (["data.num_workers=some"], "data.num_workers: expected an integer >= 0, got 'some'"),
        (["data.cache=true", "data.cache_dir=null"],
         "data.cache_dir: expected a directory (data.cache=true), got None"),
    ],
)
def test_bad_data_settings_name_their_key(
    tmp_path: Path, datamodule: Callable[..., BinDataModule], overrides: list[str], message: str
) -> None:
    with pytest.raises(BincountError) as err:
        datamodule(tmp_path, *overrides)
    assert message in str(err.value)


def test_a_split_of_no_images_is_refused(
    abid_dir: Path, tmp_path: Path, datamodule: Callable[..., BinDataModule]
) -> None:
    data = tmp_path / "abid"
    shutil.copytree(abid_dir, data)
    dm = datamodule(data, "data.splits=[0.0,0.0,1.0]", "data.overwrite_splits=true")
    dm.prepare_data()
    with pytest.raises(DataError, match="the train split of .*splits.json has no images"):
        dm.setup()
