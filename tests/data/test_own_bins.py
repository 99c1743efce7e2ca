"""A user's own bins (data=folder, data=table) of real ABID photos: the labelled list, the split
manifest, the DataModule, and the bad input a user can give, named by file and row."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from bincount.config import build
from bincount.data.abid import DataError
from bincount.data.datamodule import BinDataModule
from bincount.data.splits import load_manifest
from bincount.evaluate import evaluate
from bincount.serving.predict import predict
from bincount.train import train
from tests.support.ownbins import (
    COUNTS,
    PER_COUNT,
    make_folder_set,
    make_table_set,
    sample_by_count,
)
from tests.support.tiny import METRIC_KEYS, TINY


@pytest.fixture
def datamodule(make_cfg: Callable[..., DictConfig]) -> Callable[..., BinDataModule]:
    def _make(*overrides: str) -> BinDataModule:
        cfg = make_cfg("data.num_workers=0", "data.image_size=32", "data.batch_size=4",
                       *overrides, tiny=False)
        return build(cfg.data)

    return _make


@pytest.fixture(scope="module")
def folder_set(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("own") / "bins"
    make_folder_set(sample_dir, root)
    (root / "3" / "notes.txt").write_text("not a photo: not picked up")
    (root / "5" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def test_a_folder_per_count_trains_on_counts_0_to_7(
    folder_set: Path, datamodule: Callable[..., BinDataModule], tmp_path: Path
) -> None:
    root = tmp_path / "bins"
    shutil.copytree(folder_set, root)
    dm = datamodule("data=folder", f"data.root={root}", "data.splits=[0.6,0.2,0.2]")
    assert dm.counts == COUNTS  # from the folder names: an empty-bin class and more than five
    dm.prepare_data()
    manifest = load_manifest(root / "splits.json")
    assert manifest["source"] == "folder"
    assert {e["path"]: e["count"] for e in manifest["images"]} == {
        f"{c}/{p.name}": c for c in COUNTS for p in (root / str(c)).glob("bin-*.jpg")}
    assert [s["path"] for s in manifest["skipped"]] == [str(root / "5" / "broken.jpg")]
    for count in COUNTS:  # stratified: every count in every split
        splits = [e["split"] for e in manifest["images"] if e["count"] == count]
        assert sorted(splits) == ["test", "train", "train", "train", "val"]
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 24, "val": 8, "test": 8}
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[1:] == (3, 32, 32)

    # Written once: the same photos reuse it, another photo set is refused (not re-split).
    before = (root / "splits.json").read_text()
    datamodule("data=folder", f"data.root={root}", "data.splits=[0.6,0.2,0.2]").prepare_data()
    assert (root / "splits.json").read_text() == before
    shutil.copy(next((root / "4").glob("*.jpg")), root / "2" / "moved.jpg")
    with pytest.raises(DataError, match="inputs_sha256 differ"):
        datamodule("data=folder", f"data.root={root}", "data.splits=[0.6,0.2,0.2]").prepare_data()


def test_data_counts_keeps_those_and_reports_the_rest(
    folder_set: Path, datamodule: Callable[..., BinDataModule], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "bins"
    shutil.copytree(folder_set, root)
    dm = datamodule("data=folder", f"data.root={root}", "data.counts=[1,2,3]",
                    "data.splits=[0.6,0.2,0.2]")
    dm.prepare_data()
    dm.setup()
    assert sum(len(d) for d in dm.datasets.values()) == 3 * PER_COUNT
    assert any(f"{5 * PER_COUNT} images are left out" in r.getMessage() for r in caplog.records)


def test_a_table_with_fixed_splits_and_expected_counts(
    sample_dir: Path, datamodule: Callable[..., BinDataModule], tmp_path: Path
) -> None:
    table = make_table_set(sample_dir, tmp_path / "set", "labels.jsonl", counts=[0, 6])
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    rows[0]["split"] = "test"
    extra = tmp_path / "set" / "photos" / "extra.jpg"  # given by its absolute path
    shutil.copy(sample_dir / "images" / "00002.jpg", extra)
    rows.append({"path": str(extra), "count": 6, "split": "val"})
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = datamodule("data=table", f"data.table={table}", "data.splits=[0.6,0.2,0.2]")
    assert dm.counts == [0, 6] and dm.data_dir == tmp_path / "set"
    dm.prepare_data()
    manifest = load_manifest(tmp_path / "set" / "splits.json")
    entries = {e["id"]: e for e in manifest["images"]}
    assert entries[rows[0]["path"]]["split"] == "test"
    assert entries["photos/extra.jpg"]["split"] == "val"  # absolute, inside: made relative
    assert all(e["expected"] == e["count"] for e in manifest["images"] if "expected" in e)
    dm.setup()
    assert sum(len(d) for d in dm.datasets.values()) == len(rows)

    # The label source corrected: the kept manifest takes up the new expected count (an upload
    # writes its labels.csv from it), the splits stay as they were.
    rows[1]["expected"] = rows[1]["count"] + 1
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    datamodule("data=table", f"data.table={table}", "data.splits=[0.6,0.2,0.2]").prepare_data()
    again = load_manifest(tmp_path / "set" / "splits.json")
    assert [e["split"] for e in again["images"]] == [e["split"] for e in manifest["images"]]
    assert {e["id"]: e.get("expected") for e in again["images"]} == {
        **{e["id"]: e.get("expected") for e in manifest["images"]},
        rows[1]["path"]: rows[1]["count"] + 1}


@pytest.mark.parametrize(("content", "message"), [
    ("path,label\nphotos/00001.jpg,3\n", r"no 'count' column .*found label, path"),
    ("path,count\nphotos/00001.jpg,three\n", r"labels.csv, row 2: count 'three' is not an item"),
    ("path,count\nphotos/00001.jpg,2.5\n", r"row 2: count '2.5' is not an item count"),
    ("path,count\nphotos/00001.jpg,1\nphotos/nope.jpg,1\n", r"row 3: .*nope.jpg does not exist"),
    ("path,count,split\nphotos/00001.jpg,1,training\n", r"row 2: split 'training' is not one"),
])
def test_bad_table_rows_are_named(
    sample_dir: Path, tmp_path: Path, datamodule: Callable[..., BinDataModule],
    content: str, message: str,
) -> None:
    (tmp_path / "photos").mkdir()
    shutil.copy(sample_dir / "images" / "00001.jpg", tmp_path / "photos")
    (tmp_path / "labels.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        datamodule("data=table", f"data.table={tmp_path / 'labels.csv'}")


def test_bad_folders_are_named(
    sample_dir: Path, tmp_path: Path, datamodule: Callable[..., BinDataModule]
) -> None:
    (tmp_path / "2").mkdir()
    shutil.copy(sample_dir / "images" / "00001.jpg", tmp_path / "2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: folder name 'empty' is not an item count"):
        datamodule("data=folder", f"data.root={tmp_path}")
    (tmp_path / "empty").rename(tmp_path / "4")
    with pytest.raises(DataError, match=r"/4: empty class folder"):
        datamodule("data=folder", f"data.root={tmp_path}")
    with pytest.raises(DataError, match=r"data.root: .*nowhere is not a directory"):
        datamodule("data=folder", f"data.root={tmp_path / 'nowhere'}")


def test_a_table_set_trains_evaluates_and_predicts_with_verdicts(
    sample_dir: Path, make_cfg: Callable[..., DictConfig], tmp_path: Path, one_thread: None,
) -> None:
    """One tiny run on a table of real photos (counts 0-7, one label source off by one), and
    what a user does with it next: evaluate its best checkpoint, predict the table's photos."""
    shifted = sample_by_count(sample_dir)[7][0]  # the label source says 6 for this 7
    table = make_table_set(sample_dir, tmp_path / "set", expected_shift={shifted: -1})
    tiny = [o for o in TINY if not o.startswith(("data=", "data.synthetic"))]
    metrics = train(make_cfg("data=table", f"data.table={table}", "data.splits=[0.6,0.2,0.2]",
                             *tiny, "trainer.max_epochs=1", tiny=False))
    run = tmp_path / "run"

    manifest = load_manifest(tmp_path / "set" / "splits.json")  # beside the table
    assert manifest["source"] == "table" and len(manifest["images"]) == len(COUNTS) * PER_COUNT
    assert json.loads((run / "model" / "model.json").read_text())["counts"] == COUNTS
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved) >= METRIC_KEYS and saved["val_loss"] == pytest.approx(metrics["val_loss"])
    assert set(saved["test_per_class_acc"]) == {str(c) for c in COUNTS}

    # The best checkpoint evaluates from the table its run recorded (no data settings given).
    evaluated = evaluate(make_cfg(f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}",
                                  f"paths.output_dir={run / 'eval'}", name="eval", tiny=False))
    assert evaluated["temperature"] == pytest.approx(saved["temperature"])
    assert set(evaluated["test_per_class_acc"]) == {str(c) for c in COUNTS}
    assert json.loads((run / "eval" / "metrics.json").read_text())["reconcile_pairs"] > 0

    # Predicting the table: one row per photo, each with its expected count and a verdict.
    out = tmp_path / "predictions.csv"
    predict(make_cfg(f"images={table}", f"model_dir={run / 'model'}",
                     f"predict.output={out}", "predict.progress=false",
                     name="predict", tiny=False))
    rows = {Path(r["image"]).name: r for r in csv.DictReader(out.open())}
    wanted = {Path(r["path"]).name: int(r["expected"]) for r in csv.DictReader(table.open())}
    assert {name: int(r["expected"]) for name, r in rows.items()} == wanted
    assert wanted[f"{shifted}.jpg"] == 6
    for row in rows.values():
        assert not row["error"] and int(row["count"]) in COUNTS
        assert row["verdict"] in {"match", "mismatch", "review"}
        assert float(row["p_expected"]) == pytest.approx(
            json.loads(row["probabilities"])[row["expected"]], abs=1e-6)
