"""Uploading a prepared set to the user's bucket (moto), for a SageMaker training channel."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bincount.data.abid import read_metadata, write_file_list
from bincount.data.download import s3_client
from bincount.data.splits import ensure_manifest
from bincount.data.upload import UploadError, upload_prepared


def real_labels(sample_dir: Path, per_count: int) -> dict[str, int]:
    labels: dict[str, int] = {}
    for path in sorted((sample_dir / "metadata").glob("*.json")):
        count = read_metadata(path).expected_quantity
        if 1 <= count <= 5 and sum(c == count for c in labels.values()) < per_count:
            labels[path.stem] = count
    return labels


@pytest.fixture
def prepared(sample_dir: Path, tmp_path: Path) -> Path:
    data = tmp_path / "abid"
    for sub in ("images", "metadata", "rejected"):
        (data / sub).mkdir(parents=True)
    labels = real_labels(sample_dir, 2)
    for image_id in labels:
        shutil.copy(sample_dir / "images" / f"{image_id}.jpg", data / "images")
        shutil.copy(sample_dir / "metadata" / f"{image_id}.json", data / "metadata")
    write_file_list(data / "file_list.json", labels)
    ensure_manifest(data, [0.8, 0.1, 0.1], seed=42)
    (data / "rejected" / "99999.jpg").write_bytes(b"junk")  # not part of the set
    (data / "failed.json").write_text("[]")
    return data


@pytest.fixture
def user_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="my-bucket")
        yield client


def keys(client: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_uploads_the_prepared_set_and_skips_what_is_there(
    prepared: Path, user_bucket: Any
) -> None:
    report = upload_prepared(prepared, "my-bucket", "abid", user_bucket, 4, False)
    ids = [p.stem for p in (prepared / "images").glob("*.jpg")]
    expected = {"abid/file_list.json", "abid/splits.json",
                *(f"abid/images/{i}.jpg" for i in ids), *(f"abid/metadata/{i}.json" for i in ids)}
    assert keys(user_bucket, "my-bucket") == expected  # no rejected/, no failed.json
    assert (report.uri, report.uploaded, report.skipped) == ("s3://my-bucket/abid", 22, 0)
    body = user_bucket.get_object(Bucket="my-bucket", Key=f"abid/images/{ids[0]}.jpg")["Body"]
    assert body.read() == (prepared / "images" / f"{ids[0]}.jpg").read_bytes()

    again = upload_prepared(prepared, "my-bucket", "abid", user_bucket, 4, False)
    assert (again.uploaded, again.skipped) == (0, 22)

    # Same size, other bytes: the checksum tells, and only that file goes up again.
    meta = prepared / "metadata" / f"{ids[0]}.json"
    original = meta.read_bytes()
    meta.write_bytes(original[:-1] + (b"\n" if original.endswith(b" ") else b" "))
    assert len(meta.read_bytes()) == len(original)
    changed = upload_prepared(prepared, "my-bucket", "abid", user_bucket, 4, False)
    assert (changed.uploaded, changed.skipped) == (1, 21)


def test_upload_mistakes_get_clear_messages(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_client(region="us-east-1", endpoint_url="http://127.0.0.1:9", unsigned=False,
                       retry_mode="standard", max_attempts=1, max_pool_connections=1)
    with pytest.raises(UploadError, match="file_list.json is missing: run scripts/prepare_data.py"):
        upload_prepared(tmp_path, "my-bucket", "abid", client, 1, False)
    (prepared / "images" / next((prepared / "images").glob("*.jpg")).name).unlink()
    with pytest.raises(UploadError, match="1 files listed in .* are missing"):
        upload_prepared(prepared, "my-bucket", "abid", client, 1, False)

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    anonymous = s3_client(region="us-east-1", endpoint_url="http://127.0.0.1:9", unsigned=False,
                          retry_mode="standard", max_attempts=1, max_pool_connections=1)
    write_file_list(prepared / "file_list.json", {})
    with pytest.raises(UploadError, match="upload_to needs your AWS credentials"):
        upload_prepared(prepared, "my-bucket", "abid", anonymous, 1, False)
