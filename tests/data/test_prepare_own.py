"""prepare_data with prepare.source=folder|table: check a user's set of real photos, write the
manifest, upload it (moto), and read the uploaded channel as the SageMaker job does."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from omegaconf import DictConfig

from bincount.config import build
from bincount.data.prepare import prepare_data
from bincount.data.splits import load_manifest
from tests.support.ownbins import make_folder_set, make_table_set


@pytest.fixture
def user_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="my-bucket")
        yield client


def download(client: Any, prefix: str, dest: Path) -> Path:
    """The channel as SageMaker mounts it (File mode): every object under the prefix."""
    for obj in client.list_objects_v2(Bucket="my-bucket", Prefix=prefix)["Contents"]:
        path = dest / obj["Key"][len(prefix) + 1:]
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file("my-bucket", obj["Key"], str(path))
    return dest


def splits_of(manifest_path: Path) -> dict[str, str]:
    return {e["id"]: e["split"] for e in load_manifest(manifest_path)["images"]}


def test_a_table_set_is_checked_split_uploaded_and_read_back_as_the_job_does(
    sample_dir: Path, tmp_path: Path, user_bucket: Any,
    make_cfg: Callable[..., DictConfig], capsys: pytest.CaptureFixture[str],
) -> None:
    table = make_table_set(sample_dir, tmp_path / "mine", "labels.jsonl", counts=[0, 1, 6],
                           per_count=4)
    outside = tmp_path / "elsewhere" / "bin.jpg"  # a photo given by an absolute path
    outside.parent.mkdir()
    shutil.copy(sample_dir / "images" / "00010.jpg", outside)
    (tmp_path / "mine" / "photos" / "torn.jpg").write_bytes(b"\xff\xd8\xff torn")
    with table.open("a") as f:
        f.write(json.dumps({"path": str(outside), "count": 1, "split": "train"}) + "\n")
        f.write(json.dumps({"path": "photos/torn.jpg", "count": 1}) + "\n")
    cfg = make_cfg("data=table", f"data.table={table}", "prepare.upload_to=s3://my-bucket/own",
                   "prepare.progress=false", "data.splits=[0.5,0.25,0.25]",
                   name="prepare_data", tiny=False)
    assert prepare_data(cfg) == 0
    out = capsys.readouterr().out
    assert "table set in" in out and "1 unreadable photos left out" in out and "torn.jpg" in out
    assert "launcher=sagemaker data=table launcher.inputs.train=s3://my-bucket/own" in out
    local = splits_of(tmp_path / "mine" / "splits.json")
    assert len(local) == 13 and local[outside.as_posix()] == "train"

    channel = download(user_bucket, "own", tmp_path / "channel")
    assert (channel / "labels.csv").is_file() and (channel / "splits.json").is_file()
    job = make_cfg("data=table", f"paths.data_dir={channel}",  # no data.table: the channel's
                   "data.splits=[0.5,0.25,0.25]", tiny=False)
    dm = build(job.data)
    assert dm.counts == [0, 1, 6]
    dm.prepare_data()  # the uploaded manifest is the job's: reused, not refused or re-split
    remote = splits_of(channel / "splits.json")
    moved = next(k for k in remote if k.startswith("files/"))
    assert remote.pop(moved) == local.pop(outside.as_posix()) and remote == local
    dm.setup()
    assert sum(len(d) for d in dm.datasets.values()) == 13

    # The table read straight from S3: it and its photos are copied once under cache_dir.
    s3 = make_cfg("data=table", "data.table=s3://my-bucket/own/labels.csv",
                  "data.splits=[0.5,0.25,0.25]", tiny=False)
    from_s3 = build(s3.data)
    assert from_s3.counts == [0, 1, 6] and str(from_s3.data_dir).startswith(s3.paths.cache_dir)
    from_s3.prepare_data()
    assert splits_of(from_s3.data_dir / "splits.json") == {**local, moved: "train"}


def test_a_folder_set_uploads_as_the_channel_data_folder_reads(
    sample_dir: Path, tmp_path: Path, user_bucket: Any, make_cfg: Callable[..., DictConfig],
) -> None:
    root = tmp_path / "bins"
    make_folder_set(sample_dir, root, counts=[0, 2, 7], per_count=3)
    cfg = make_cfg("prepare.source=folder", f"data.root={root}", "prepare.progress=false",
                   "prepare.upload_to=s3://my-bucket/folder", name="prepare_data", tiny=False)
    assert prepare_data(cfg) == 0
    channel = download(user_bucket, "folder", tmp_path / "channel")
    assert sorted(p.relative_to(channel).as_posix() for p in channel.rglob("*.jpg")) == sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    job = build(make_cfg("data=folder", f"paths.data_dir={channel}", tiny=False).data)
    job.prepare_data()
    assert splits_of(channel / "splits.json") == splits_of(root / "splits.json")
    assert job.counts == [0, 2, 7]


def test_a_bad_source_is_exit_2_naming_it(
    tmp_path: Path, make_cfg: Callable[..., DictConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "labels.csv").write_text("path,how_many\na.jpg,3\n")
    cfg = make_cfg("data=table", f"data.table={tmp_path / 'labels.csv'}", name="prepare_data",
                   tiny=False)
    assert prepare_data(cfg) == 2
    assert "labels.csv: no 'count' column" in capsys.readouterr().err
