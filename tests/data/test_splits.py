from pathlib import Path

import pytest

from bincount.data.abid import DataError, write_file_list
from bincount.data.splits import ensure_manifest, load_manifest, split_ids


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    labels = {f"{i:05d}": 1 + i % 5 for i in range(500)}
    write_file_list(tmp_path / "file_list.json", labels)
    return tmp_path


def test_splits_are_stratified_and_cover_every_image(data_dir: Path) -> None:
    manifest = load_manifest(ensure_manifest(data_dir, [0.8, 0.1, 0.1], seed=3))
    sizes = {s: len(split_ids(manifest, s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 400, "val": 50, "test": 50}
    for split in ("val", "test"):
        counts = [c for _, c in split_ids(manifest, split)]
        assert all(counts.count(c) == 10 for c in range(1, 6))
    assert manifest["seed"] == 3 and manifest["ratios"] == [0.8, 0.1, 0.1]
    assert len(manifest["file_list_sha256"]) == 64


def test_same_inputs_give_the_same_manifest(data_dir: Path, tmp_path_factory) -> None:
    first = (ensure_manifest(data_dir, [0.8, 0.1, 0.1], seed=3)).read_text()
    other = tmp_path_factory.mktemp("other")
    (other / "file_list.json").write_bytes((data_dir / "file_list.json").read_bytes())
    assert ensure_manifest(other, [0.8, 0.1, 0.1], seed=3).read_text() == first


def test_changed_inputs_never_resplit_silently(data_dir: Path) -> None:
    path = ensure_manifest(data_dir, [0.8, 0.1, 0.1], seed=3)
    before = path.read_text()
    with pytest.raises(DataError, match="seed differ.*overwrite_splits=true"):
        ensure_manifest(data_dir, [0.8, 0.1, 0.1], seed=4)
    assert path.read_text() == before
    ensure_manifest(data_dir, [0.8, 0.1, 0.1], seed=4, overwrite=True)
    assert load_manifest(path)["seed"] == 4


def test_bad_ratios_are_refused(data_dir: Path) -> None:
    with pytest.raises(DataError, match="three non-negative numbers summing to 1"):
        ensure_manifest(data_dir, [0.8, 0.3, 0.1], seed=3)
    assert not (data_dir / "splits.json").exists()
