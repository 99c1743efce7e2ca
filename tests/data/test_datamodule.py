"""The DataModule, built from the data config as training builds it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from bincount.config import build
from bincount.data.abid import DataError
from bincount.data.datamodule import BinDataModule, DataNotFoundError
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
    # Same photos up to resize rounding (normalized units; other photos differ by ~1).
    assert (jpeg["image"] - cached["image"]).abs().mean() < 0.1
    assert list(tmp_path.rglob("*.u8")), "the cache files were written under cache_dir"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.batch_size=0"], "data.batch_size: expected an integer >= 1, got 0"),
        (["data.shuffle_seed=-1"], "data.shuffle_seed: expected an integer >= 0, got -1"),
        (["data.counts=[1,2,2]"], "data.counts: expected distinct item counts, got [1, 2, 2]"),
        (["data.counts=[1,two]"], "data.counts[1]: expected an integer >= 0, got 'two'"),
        (["data.splits=[0.8,0.3,0.1]"],
         "data.splits: expected three non-negative numbers summing to 1, got [0.8, 0.3, 0.1]"),
        (["data.overwrite_splits=maybe"], "data.overwrite_splits: expected true or false"),
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
