"""The preprocessed uint8 cache against the JPEG loader, on real ABID photos."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from bincount.data.abid import DataError, read_metadata, write_file_list
from bincount.data.cache import CachedBinDataset, cached_datasets, ensure_cache
from bincount.data.dataset import BinImageDataset
from bincount.data.prepare import prepare_data
from bincount.data.splits import SPLITS, ensure_manifest, load_manifest, split_ids
from bincount.data.transforms import eval_transform, train_transform
from tests.support.local_s3 import LocalS3, put_bins

SIZE = 64
COUNTS = (1, 2, 3, 4, 5)


@pytest.fixture
def data_dir(sample_dir: Path, tmp_path: Path) -> Path:
    """A prepared data dir: 8 real bins per count and their split manifest."""
    data = tmp_path / "abid"
    (data / "images").mkdir(parents=True)
    labels: dict[str, int] = {}
    for path in sorted((sample_dir / "metadata").glob("*.json")):
        count = read_metadata(path).expected_quantity
        if count in COUNTS and sum(c == count for c in labels.values()) < 8:
            labels[path.stem] = count
            shutil.copy(sample_dir / "images" / f"{path.stem}.jpg", data / "images")
    write_file_list(data / "file_list.json", labels)
    ensure_manifest(data, [0.5, 0.25, 0.25], seed=1)
    return data


def test_cached_items_match_the_jpeg_loader(data_dir: Path, tmp_path: Path) -> None:
    location = ensure_cache(data_dir, tmp_path / "cache", SIZE, workers=2, progress=False)
    manifest = load_manifest(data_dir / "splits.json")
    transform = eval_transform(SIZE)
    for split in SPLITS:
        jpeg = BinImageDataset(split_ids(manifest, split), data_dir / "images", transform)
        cached = CachedBinDataset(location, split, transform, COUNTS)
        assert len(cached) == len(jpeg) > 0
        for n in range(len(jpeg)):
            a, b = jpeg[n], cached[n]
            assert (a["id"], a["label"]) == (b["id"], b["label"]) and isinstance(b["id"], str)
            assert a["image"].shape == b["image"].shape == (3, SIZE, SIZE)
            assert b["image"].dtype == torch.float32
            # Resized twice (short side, then square) instead of once: rounding only.
            difference = (a["image"] - b["image"]).abs()
            assert difference.mean() < 0.03 and difference.max() < 0.8
    # Another photo differs by far more than that rounding.
    other = (cached[0]["image"] - cached[1]["image"]).abs().mean()
    assert other > 0.2
    raw = cached.raw(0)
    assert raw.dtype == torch.uint8 and min(raw.shape[1:]) == SIZE


def test_the_cache_is_reused_and_rebuilt_when_manifest_or_size_change(
    data_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    location = ensure_cache(data_dir, cache, SIZE, workers=1, progress=False)
    index = location / "train.json"
    stamp = index.stat().st_mtime_ns
    assert ensure_cache(data_dir, cache, SIZE, workers=1, progress=False) == location
    assert index.stat().st_mtime_ns == stamp  # same key: nothing rewritten

    ensure_cache(data_dir, cache, 48, workers=1, progress=False)
    assert json.loads(index.read_text())["key"]["short_side"] == 48
    assert min(CachedBinDataset(location, "train", None, COUNTS).raw(0).shape[1:]) == 48

    ensure_manifest(data_dir, [0.5, 0.25, 0.25], seed=2, overwrite=True)
    ensure_cache(data_dir, cache, 48, workers=1, progress=False)
    manifest = load_manifest(data_dir / "splits.json")
    wanted = [i for i, _ in split_ids(manifest, "train")]
    assert CachedBinDataset(location, "train", None, COUNTS).ids == wanted

    # A data file cut short (a crash, a full disk) is noticed and rebuilt.
    data_file = location / "val.u8"
    data_file.write_bytes(data_file.read_bytes()[:100])
    ensure_cache(data_dir, cache, 48, workers=1, progress=False)
    assert len(CachedBinDataset(location, "val", eval_transform(SIZE), COUNTS)[0]["image"]) == 3


def test_unreadable_photos_are_left_out_with_a_warning(data_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(data_dir / "splits.json")
    broken, _ = split_ids(manifest, "train")[0]
    photo = data_dir / "images" / f"{broken}.jpg"
    photo.write_bytes(photo.read_bytes()[:300])
    with pytest.warns(UserWarning, match=f"cache train: 1 unreadable.*{broken}.jpg"):
        location = ensure_cache(data_dir, tmp_path / "cache", SIZE, workers=2, progress=False)
    dataset = CachedBinDataset(location, "train", None, COUNTS)
    assert broken not in dataset.ids
    assert len(dataset) == len(split_ids(manifest, "train")) - 1
    assert dataset.skipped[0]["id"] == broken


def test_cached_datasets_feed_a_multiprocess_dataloader(data_dir: Path, tmp_path: Path) -> None:
    transforms = {"train": train_transform(SIZE), "val": eval_transform(SIZE)}
    datasets = cached_datasets(data_dir, tmp_path / "cache", SIZE, transforms, COUNTS,
                               workers=2, progress=False)
    assert set(datasets) == {"train", "val"}
    loader = DataLoader(datasets["train"], batch_size=8, num_workers=2, shuffle=True)
    batches = list(loader)
    assert sum(len(b["id"]) for b in batches) == len(datasets["train"])
    assert batches[0]["image"].shape == (8, 3, SIZE, SIZE)
    assert set(torch.cat([b["label"] for b in batches]).tolist()) == {0, 1, 2, 3, 4}


def test_seeded_augmentation_depends_on_seed_epoch_and_index_only(
    data_dir: Path, tmp_path: Path
) -> None:
    transforms = {"train": train_transform(SIZE)}
    train = cached_datasets(data_dir, tmp_path / "cache", SIZE, transforms, COUNTS, workers=1,
                            progress=False, seeds={"train": 5})["train"]
    first = train[3]["image"]
    torch.manual_seed(123)  # the global RNG does not matter
    assert torch.equal(train[3]["image"], first)
    train.epoch = 1
    assert not torch.equal(train[3]["image"], first)


def test_a_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="splits.json is missing: run scripts/prepare_data.py"):
        ensure_cache(tmp_path, tmp_path / "cache", SIZE, workers=1, progress=False)


def test_prepare_data_builds_the_cache_training_reads(
    sample_dir: Path, make_cfg: Callable[..., DictConfig], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    labels = {}
    for path in sorted((sample_dir / "metadata").glob("*.json")):
        count = read_metadata(path).expected_quantity
        if count in COUNTS and sum(c == count for c in labels.values()) < 4:
            labels[path.stem] = count
    write_file_list(tmp_path / "list.json", labels)
    with LocalS3() as s3:
        put_bins(s3.public_bucket("abid-cache"), "abid-cache", sample_dir, list(labels))
        cfg = make_cfg(
            f"paths.data_dir={tmp_path / 'abid'}", f"prepare.file_list={tmp_path / 'list.json'}",
            "prepare.bucket=abid-cache", f"prepare.endpoint_url={s3.url}",
            "prepare.progress=false", "prepare.cache=true", f"data.image_size={SIZE}",
            name="prepare_data", tiny=False,
        )
        assert prepare_data(cfg) == 0
    assert f"Preprocessed cache ({SIZE} px short side)" in capsys.readouterr().out
    # What the DataModule does with data.cache=true: the same cache, not rebuilt.
    location = ensure_cache(tmp_path / "abid", cfg.paths.cache_dir, SIZE, 1, False)
    stamp = (location / "train.json").stat().st_mtime_ns
    datasets = cached_datasets(tmp_path / "abid", cfg.paths.cache_dir, SIZE,
                               {"test": eval_transform(SIZE)}, COUNTS, 1, False)
    assert (location / "train.json").stat().st_mtime_ns == stamp
    assert {datasets["test"][n]["id"] for n in range(len(datasets["test"]))} <= set(labels)
