"""The preprocessed uint8 cache against the JPEG loader, on real ABID photos."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from bincount.data.abid import DataError, read_metadata, write_file_list
from bincount.data.cache import CachedBinDataset, ensure_cache
from bincount.data.dataset import BinImageDataset
from bincount.data.splits import SPLITS, ensure_manifest, load_manifest, split_ids
from bincount.data.transforms import eval_transform, resize_transform, train_transform

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
        jpeg = BinImageDataset(split_ids(manifest, split), data_dir / "images", transform, COUNTS)
        cached = CachedBinDataset(location, split, transform, COUNTS)
        assert len(cached) == len(jpeg) > 0
        for n in range(len(jpeg)):
            a, b = jpeg[n], cached[n]
            assert (a["id"], a["label"]) == (b["id"], b["label"]) and isinstance(b["id"], str)
            assert a["image"].shape == b["image"].shape == (3, SIZE, SIZE)
            assert b["image"].dtype == torch.float32
            # Cached at the training square: the very tensor the JPEG path makes.
            assert torch.equal(a["image"], b["image"])
    assert not torch.equal(cached[0]["image"], cached[1]["image"])
    raw = cached.raw(0)
    assert raw.dtype == torch.uint8 and raw.shape == (3, SIZE, SIZE)
    # The batched path's uint8 input: the same as resizing the JPEG, with no transform at all.
    jpeg = BinImageDataset(split_ids(manifest, "val"), data_dir / "images",
                           resize_transform(SIZE), COUNTS)
    assert torch.equal(CachedBinDataset(location, "val", None, COUNTS)[0]["image"],
                       jpeg[0]["image"])


def _build(data_dir: Path, cache: Path) -> None:
    ensure_cache(data_dir, cache, SIZE, workers=1, progress=False)


def test_runs_started_together_build_the_cache_once_and_both_read_it(
    data_dir: Path, tmp_path: Path
) -> None:
    """Two trainings on the same data started at once (a sweep's parallel trials): one builds
    while the other waits; before the build lock, one deleted the other's partial file."""
    cache = tmp_path / "cache"
    context = multiprocessing.get_context("fork")
    runs = [context.Process(target=_build, args=(data_dir, cache)) for _ in range(3)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(120)
    assert [run.exitcode for run in runs] == [0, 0, 0]
    location = ensure_cache(data_dir, cache, SIZE, workers=1, progress=False)
    assert not list(location.glob(".*.tmp"))
    manifest = load_manifest(data_dir / "splits.json")
    for split in SPLITS:
        cached = CachedBinDataset(location, split, None, COUNTS)
        assert len(cached) == len(split_ids(manifest, split))


def test_the_cache_is_reused_and_rebuilt_when_manifest_or_size_change(
    data_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    location = ensure_cache(data_dir, cache, SIZE, workers=1, progress=False)
    index = location / "train.json"
    stamp = index.stat().st_mtime_ns
    assert ensure_cache(data_dir, cache, SIZE, workers=1, progress=False) == location
    assert index.stat().st_mtime_ns == stamp  # same key: nothing rewritten

    killed = location / ".train.u8.x1y2z3.tmp"  # the partial file of a killed build
    killed.write_bytes(b"partial")
    ensure_cache(data_dir, cache, 48, workers=1, progress=False)
    assert json.loads(index.read_text())["key"]["size"] == [48, 48]
    assert not killed.exists()
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


def test_the_cache_feeds_a_multiprocess_dataloader(data_dir: Path, tmp_path: Path) -> None:
    location = ensure_cache(data_dir, tmp_path / "cache", SIZE, workers=2, progress=False)
    train = CachedBinDataset(location, "train", train_transform(SIZE), COUNTS)
    loader = DataLoader(train, batch_size=8, num_workers=2, shuffle=True)
    batches = list(loader)
    assert sum(len(b["id"]) for b in batches) == len(train)
    assert batches[0]["image"].shape == (8, 3, SIZE, SIZE)
    assert set(torch.cat([b["label"] for b in batches]).tolist()) == {0, 1, 2, 3, 4}


def test_seeded_augmentation_depends_on_seed_epoch_and_index_only(
    data_dir: Path, tmp_path: Path
) -> None:
    location = ensure_cache(data_dir, tmp_path / "cache", SIZE, workers=1, progress=False)
    train = CachedBinDataset(location, "train", train_transform(SIZE), COUNTS, seed=5)
    first = train[3]["image"]
    torch.manual_seed(123)  # the global RNG does not matter
    assert torch.equal(train[3]["image"], first)
    train.epoch = 1
    assert not torch.equal(train[3]["image"], first)


def test_a_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="splits.json is missing: run scripts/prepare_data.py"):
        ensure_cache(tmp_path, tmp_path / "cache", SIZE, workers=1, progress=False)
