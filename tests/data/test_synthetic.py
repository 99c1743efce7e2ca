"""Synthetic bins: written in the ABID layout, deterministic, cached by their parameters."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bincount.data.abid import DataError, read_file_list, read_metadata
from bincount.data.synthetic import MARKER, render_synthetic
from bincount.errors import BincountError

SMALL = {"per_class": 3, "image_size": 48, "seed": 0, "counts": (1, 2, 3, 4, 5)}


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_synthetic(tmp_path_factory.mktemp("syn") / "set", **SMALL)


def test_layout_reads_back_through_the_abid_code_path(small_set: Path) -> None:
    labels = read_file_list(small_set / "file_list.json")
    assert sorted(labels.values()) == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]
    assert all(isinstance(i, str) and len(i) == 6 and i.isdigit() for i in labels)
    images = {p.stem for p in (small_set / "images").glob("*.jpg")}
    metadata = {p.stem for p in (small_set / "metadata").glob("*.json")}
    assert images == metadata == set(labels)
    assert not [p.name for p in small_set.parent.iterdir() if p.name != "set"]  # no leftovers

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a label that disagrees with its items would warn
        metas = [read_metadata(small_set / "metadata" / f"{i}.json") for i in labels]
    for meta in metas:
        assert meta.expected_quantity == labels[meta.image_id]
        assert meta.items_quantity == meta.expected_quantity
        assert len({item.asin for item in meta.items}) == len(meta.items)
        for item in meta.items:
            assert item.asin.startswith("B0") and len(item.asin) == 10
            assert item.name and item.quantity >= 1
            assert item.length_in >= item.width_in > 0 and item.height_in > 0
            assert item.weight_lb > 0


def test_metadata_is_in_the_abid_format(small_set: Path) -> None:
    raw = json.loads(next((small_set / "metadata").glob("*.json")).read_text())
    asin, item = next(iter(raw["BIN_FCSKU_DATA"].items()))
    assert item["asin"] == asin and item["normalizedName"] == item["name"]
    for dim in ("length", "width", "height"):
        assert item[dim]["unit"] == "IN" and item[dim]["value"] > 0
    assert item["weight"]["unit"] == "pounds"


def test_repeated_products_appear_with_quantities_above_one(tmp_path: Path) -> None:
    out = render_synthetic(tmp_path / "set", **{**SMALL, "per_class": 8, "counts": (4, 5)})
    quantities = [
        item.quantity
        for path in (out / "metadata").glob("*.json")
        for item in read_metadata(path).items
    ]
    assert max(quantities) > 1 and min(quantities) == 1


def test_images_are_jpegs_of_the_requested_size(small_set: Path) -> None:
    for path in (small_set / "images").glob("*.jpg"):
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.size == (48, 48) and image.mode == "RGB"
            image.load()
            assert np.asarray(image).std() > 10  # a picture, not a blank frame


def test_same_seed_gives_identical_bytes_other_seed_other_images(
    small_set: Path, tmp_path: Path
) -> None:
    again = render_synthetic(tmp_path / "again", **SMALL)
    assert files_of(again) == files_of(small_set)

    other = render_synthetic(tmp_path / "other", **{**SMALL, "seed": 1})
    first, second = files_of(small_set), files_of(other)
    assert first.keys() == second.keys()
    differing = [k for k in first if k.startswith("images/") and first[k] != second[k]]
    assert len(differing) == 15


def test_complete_set_is_kept_and_other_parameters_re_render(tmp_path: Path) -> None:
    out = render_synthetic(tmp_path / "set", **SMALL)
    marker = json.loads((out / MARKER).read_text())
    assert {k: marker[k] for k in ("per_class", "image_size", "seed")} == {
        "per_class": 3, "image_size": 48, "seed": 0}
    assert marker["counts"] == [1, 2, 3, 4, 5]
    (out / "splits.json").write_text("{}")  # what the datamodule writes beside the set
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    assert render_synthetic(out, **SMALL) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    render_synthetic(out, **{**SMALL, "image_size": 40})
    assert not (out / "splits.json").exists()  # the old set's split went with it
    with Image.open(next((out / "images").glob("*.jpg"))) as image:
        assert image.size == (40, 40)

    render_synthetic(out, **{**SMALL, "image_size": 40, "counts": (2, 3)})
    assert sorted(set(read_file_list(out / "file_list.json").values())) == [2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no staging or old copies left


def test_staging_of_dead_renders_is_removed_and_of_live_ones_kept(tmp_path: Path) -> None:
    finished = subprocess.Popen(["true"])  # a process that has come and gone
    finished.wait()
    host = socket.gethostname()
    dead = tmp_path / f".set.partial-{host}-{finished.pid}-abc"  # killed before renaming
    live = tmp_path / f".set.partial-{host}-{os.getpid()}-def"  # a render under way
    for staging in (dead, live):
        (staging / "images").mkdir(parents=True)
    render_synthetic(tmp_path / "set", **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["set", live.name])


def test_a_directory_of_other_data_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "file_list.json").write_text("{}")
    with pytest.raises(DataError, match="synthetic.json"):
        render_synthetic(tmp_path, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["file_list.json"]


@pytest.mark.parametrize(
    ("override", "message"),
    [({"per_class": 0}, "data.synthetic.per_class: expected an integer >= 1, got 0"),
     ({"image_size": 8}, "data.synthetic.image_size: expected an integer >= 32, got 8"),
     ({"seed": -1}, "data.synthetic.seed: expected an integer >= 0, got -1"),
     ({"counts": (1, 1)}, "data.counts: expected distinct integers in 1..8"),
     ({"counts": (0, 1)}, "data.counts[0]: expected an integer >= 1, got 0")],
)
def test_bad_parameters_are_named(tmp_path: Path, override: dict, message: str) -> None:
    with pytest.raises(BincountError) as err:
        render_synthetic(tmp_path / "set", **{**SMALL, **override})
    assert message in str(err.value)
    assert not (tmp_path / "set").exists()


def test_bins_are_saved_at_the_training_size(tmp_path: Path) -> None:
    out = render_synthetic(tmp_path / "set", **{**SMALL, "per_class": 1, "save_size": 32})
    sizes = {Image.open(p).size for p in (out / "images").glob("*.jpg")}
    assert sizes == {(32, 32)}
    assert json.loads((out / MARKER).read_text())["save_size"] == 32
    assert render_synthetic(out, **{**SMALL, "per_class": 1, "save_size": 32}) == out
