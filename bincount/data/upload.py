"""Upload a prepared data directory to the user's bucket as a SageMaker training channel.

Only the prepared set goes up: ``file_list.json``, ``splits.json`` and the photo and metadata of
every listed id, under the same layout, so the channel directory SageMaker mounts is a data
directory the DataModule reads as is. A folder or table set goes up as its photos, its manifest
and (a table) ``labels.csv``: ``data=folder`` / ``data=table`` read the channel unchanged.
Objects already there with the same size and MD5 (ETag) are skipped.
This is the one place that uses the user's own AWS credentials.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bincount.data.abid import FILE_LIST, IMAGES, METADATA, DataError, read_file_list
from bincount.data.splits import MANIFEST, image_file, items_checksum, load_manifest
from bincount.files import write_json_atomic

TABLE = "labels.csv"  # a table set's table in the channel (conf/data/table.yaml's default)


class UploadError(DataError):
    """The upload could not be done (bad URI, no credentials, S3 refused)."""


@dataclass(frozen=True)
class UploadReport:
    uri: str
    uploaded: int
    skipped: int
    bytes: int


def own_set_files(data_dir: Path, staging: Path) -> list[tuple[Path, str]] | None:
    """A folder or table set's channel (None for ABID): every photo of the manifest under its
    relative path (a photo outside the data dir under ``files/<hash>/<name>``), the manifest
    with those paths, and for a table ``labels.csv`` (path,count[,split][,expected]): what
    ``data=folder`` / ``data=table`` read in the container (``paths.data_dir`` is the channel).
    """
    manifest = load_manifest(data_dir / MANIFEST)
    source = manifest.get("source")
    if source not in ("folder", "table"):
        return None
    files: list[tuple[Path, str]] = []
    rows, missing, images = [], [], []
    for entry in manifest["images"]:
        path = image_file(data_dir, entry)
        key = str(entry["id"])
        if Path(key).is_absolute():
            tag = hashlib.sha256(str(path.parent).encode()).hexdigest()[:10]
            key = f"files/{tag}/{path.name}"
        if not path.is_file():
            missing.append(str(path))
        files.append((path, key))
        images.append({**entry, "id": key, "path": key})
        rows.append({"path": key, "count": entry["count"],
                     "split": entry["split"] if entry.get("split_fixed") else "",
                     "expected": entry.get("expected", "")})
    if missing:
        raise UploadError(f"{len(missing)} photos listed in {data_dir / MANIFEST} are missing "
                          f"(first: {missing[:3]}); run scripts/prepare_data.py again")
    uploaded = {**manifest, "images": images, "inputs_sha256": items_checksum(
        [(r["path"], r["count"], r["split"] or None) for r in rows])}
    write_json_atomic(staging / MANIFEST, uploaded)
    files.append((staging / MANIFEST, MANIFEST))
    if source == "table":
        with (staging / TABLE).open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=["path", "count", "split", "expected"])
            writer.writeheader()
            writer.writerows(rows)
        files.append((staging / TABLE, TABLE))
    return files


def prepared_files(data_dir: Path, staging: Path) -> list[tuple[Path, str]]:
    """``(local path, relative key)`` of everything a training channel needs."""
    data_dir = Path(data_dir)
    if (data_dir / MANIFEST).is_file():
        own = own_set_files(data_dir, staging)
        if own is not None:
            return own
    for name in (FILE_LIST, MANIFEST):
        if not (data_dir / name).is_file():
            raise UploadError(
                f"{data_dir / name} is missing: run scripts/prepare_data.py first, "
                "so there is a prepared set to upload"
            )
    files = [(data_dir / FILE_LIST, FILE_LIST), (data_dir / MANIFEST, MANIFEST)]
    missing = []
    for image_id in read_file_list(data_dir / FILE_LIST):
        for sub, suffix in ((IMAGES, ".jpg"), (METADATA, ".json")):
            path = data_dir / sub / f"{image_id}{suffix}"
            if not path.is_file():
                missing.append(str(path))
            files.append((path, f"{sub}/{image_id}{suffix}"))
    if missing:
        raise UploadError(
            f"{len(missing)} files listed in {data_dir / FILE_LIST} are missing "
            f"(first: {missing[:3]}); re-run scripts/prepare_data.py to complete the set"
        )
    return files


def _md5(path: Path) -> bytes:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).digest()


def _existing(client: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    """``{key: (size, etag)}`` of the objects under ``prefix``."""
    found: dict[str, tuple[int, str]] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = (int(obj["Size"]), str(obj["ETag"]).strip('"'))
    return found


def upload_prepared(
    data_dir: Path, bucket: str, prefix: str, client: Any, workers: int, progress: bool
) -> UploadReport:
    """Upload the prepared set under ``s3://<bucket>/<prefix>`` (``prefix`` without slashes at
    either end, as :func:`bincount.aws.parse_s3_uri` gives it); objects already there unchanged
    are skipped."""
    with tempfile.TemporaryDirectory() as staging:
        files = prepared_files(Path(data_dir), Path(staging))
        return _upload(files, bucket, prefix, client, workers, progress)


def _upload(files: list[tuple[Path, str]], bucket: str, prefix: str, client: Any, workers: int,
            progress: bool) -> UploadReport:
    try:
        existing = _existing(client, bucket, prefix)
    except NoCredentialsError as err:
        raise UploadError(
            "upload_to needs your AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY or an instance role); none were found"
        ) from err
    except (ClientError, BotoCoreError) as err:
        raise UploadError(f"cannot list s3://{bucket}/{prefix}: {err}") from err

    def put(item: tuple[Path, str]) -> int:
        path, relative = item
        key = f"{prefix}/{relative}" if prefix else relative
        digest = _md5(path)
        size = path.stat().st_size
        if existing.get(key) == (size, digest.hex()):
            return -1
        try:
            with path.open("rb") as body:
                client.put_object(
                    Bucket=bucket, Key=key, Body=body,
                    ContentMD5=base64.b64encode(digest).decode(),
                )
        except (ClientError, BotoCoreError) as err:
            raise UploadError(f"uploading {path} to s3://{bucket}/{key} failed: {err}") from err
        return size

    uploaded = skipped = total = 0
    columns = (TextColumn("upload"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar, ThreadPoolExecutor(
        max_workers=workers
    ) as pool:
        task = bar.add_task("upload", total=len(files))
        for size in pool.map(put, files):
            if size < 0:
                skipped += 1
            else:
                uploaded += 1
                total += size
            bar.advance(task)
    return UploadReport(f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
                        uploaded, skipped, total)
