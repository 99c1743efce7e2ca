import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from bincount.data.datamodule import BinDataModule, DataNotFoundError
from bincount.data.dataset import BinImageDataset, collate_bins
from bincount.data.transforms import eval_transform, train_transform


def test_datamodule_reads_real_abid_photos(abid_dir: Path) -> None:
    dm = BinDataModule(abid_dir, image_size=64, batch_size=8, num_workers=0)
    dm.prepare_data()
    dm.setup()
    sizes = {split: len(ds) for split, ds in dm.datasets.items()}
    assert sum(sizes.values()) == 245
    assert sizes["train"] > sizes["val"] > 0 and sizes["test"] > 0
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 64, 64)
    assert batch["label"].min() >= 0 and batch["label"].max() <= 4
    assert all(isinstance(i, str) and len(i) == 5 for i in batch["id"])


def test_unreadable_images_are_skipped_with_a_warning_that_names_them(
    abid_dir: Path, tmp_path: Path
) -> None:
    ids = sorted(p.stem for p in (abid_dir / "images").glob("*.jpg"))[:4]
    for image_id in ids:
        shutil.copy(abid_dir / "images" / f"{image_id}.jpg", tmp_path)
    truncated = tmp_path / f"{ids[1]}.jpg"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    (tmp_path / f"{ids[2]}.jpg").write_text("not a jpeg")
    dataset = BinImageDataset([(i, 2) for i in ids], tmp_path, eval_transform(32))
    with pytest.warns(UserWarning, match="skipping unreadable image") as caught:
        batch = collate_bins([dataset[i] for i in range(4)])
    named = " ".join(str(w.message) for w in caught)
    assert str(truncated) in named and f"{ids[2]}.jpg" in named
    assert batch["skipped"] == 2
    assert batch["id"] == [ids[0], ids[3]]
    assert batch["image"].shape == (2, 3, 32, 32)


def test_augmentation_keeps_the_whole_bin(sample_dir: Path) -> None:
    image = Image.open(sample_dir / "images" / "00002.jpg").convert("RGB")
    torch.manual_seed(0)
    augmented = train_transform(48)(image)
    assert augmented.shape == (3, 48, 48)
    # No crop: the evaluation view is the whole photo resized, never a cut-out.
    assert eval_transform(48)(image).shape == (3, 48, 48)


def test_missing_data_names_the_directory_and_the_command(tmp_path: Path) -> None:
    dm = BinDataModule(tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError) as err:
        dm.check_available()
    assert str((tmp_path / "nowhere").resolve()) in str(err.value)
    assert "python scripts/prepare_data.py" in str(err.value)


def test_missing_images_are_left_out(abid_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "abid"
    shutil.copytree(abid_dir, data)
    gone = sorted((data / "images").glob("*.jpg"))[:3]
    for path in gone:
        path.unlink()
    dm = BinDataModule(data, image_size=32, num_workers=0)
    dm.prepare_data()
    with pytest.warns(UserWarning, match="missing from"):
        dm.setup()
    assert sum(len(ds) for ds in dm.datasets.values()) == 245 - 3


def test_cached_datamodule_yields_what_the_jpeg_one_does(abid_dir: Path, tmp_path: Path) -> None:
    loaders = []
    for cache in (False, True):
        dm = BinDataModule(
            abid_dir, image_size=32, batch_size=16, num_workers=0, cache=cache, cache_dir=tmp_path
        )
        dm.prepare_data()
        dm.setup()
        loaders.append(dm.val_dataloader())
    jpeg, cached = (next(iter(loader)) for loader in loaders)
    assert jpeg["id"] == cached["id"] and torch.equal(jpeg["label"], cached["label"])
    # Same photos up to resize rounding (normalized units; other photos differ by ~1).
    assert (jpeg["image"] - cached["image"]).abs().mean() < 0.1
    assert list(tmp_path.rglob("*.u8")), "the cache files were written under cache_dir"
