"""Bin photos as a Dataset: unreadable JPEGs are skipped and named, never fatal."""

import shutil
from pathlib import Path

import pytest

from bincount.data.dataset import BinImageDataset, collate_bins
from bincount.data.transforms import eval_transform


def test_unreadable_images_are_skipped_with_a_warning_that_names_them(
    abid_dir: Path, tmp_path: Path
) -> None:
    ids = sorted(p.stem for p in (abid_dir / "images").glob("*.jpg"))[:4]
    for image_id in ids:
        shutil.copy(abid_dir / "images" / f"{image_id}.jpg", tmp_path)
    truncated = tmp_path / f"{ids[1]}.jpg"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    (tmp_path / f"{ids[2]}.jpg").write_text("not a jpeg")
    dataset = BinImageDataset([(i, 2) for i in ids], tmp_path, eval_transform(32), [1, 2, 3])
    with pytest.warns(UserWarning, match="skipping unreadable image") as caught:
        batch = collate_bins([dataset[i] for i in range(4)])
    named = " ".join(str(w.message) for w in caught)
    assert str(truncated) in named and f"{ids[2]}.jpg" in named
    assert batch["skipped"] == 2
    assert batch["id"] == [ids[0], ids[3]]
    assert batch["label"].tolist() == [1, 1]  # the class index of count 2 in [1, 2, 3]
    assert batch["image"].shape == (2, 3, 32, 32)
