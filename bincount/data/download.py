"""Download ABID bins (photo + metadata) from S3: concurrent, resumable, verified.

Every object is streamed to a hidden temporary name beside its destination, checked (size; MD5
against the ETag of single-part objects; a full Pillow decode for photos; a parse for metadata)
and only then renamed, so a killed run never leaves a partial file under a final name. A file
already present is re-checked with a conditional GET (``If-None-Match: <its MD5>``): S3 answers
304 when the local copy is whole and current, and it is skipped without a transfer. Retries
(throttling, 5xx, dropped connections) are botocore's own retry modes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import struct
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image, UnidentifiedImageError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bincount.data.abid import IMAGES, METADATA, UNPARSEABLE, DataError, parse_metadata, short
from bincount.files import write_text_atomic

REJECTED = "rejected"
PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 16
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


def s3_client(
    *,
    region: str,
    endpoint_url: str | None,
    unsigned: bool,
    retry_mode: str,
    max_attempts: int,
    max_pool_connections: int,
) -> Any:
    """An S3 client with botocore's retries; unsigned ones never look for credentials.

    ``endpoint_url=None`` leaves the endpoint to boto3, which honours ``AWS_ENDPOINT_URL``.
    """
    config = Config(
        retries={"mode": retry_mode, "total_max_attempts": int(max_attempts)},
        max_pool_connections=int(max_pool_connections),
        signature_version=UNSIGNED if unsigned else None,
    )
    return boto3.session.Session().client(
        "s3", region_name=region, endpoint_url=endpoint_url or None, config=config
    )


class ObjectMissing(Exception):
    """The bucket has no such key (404): recorded as failed, the run goes on."""


class FetchFailed(Exception):
    """An object could not be fetched whole, after botocore's retries."""


@dataclass(frozen=True)
class Fetched:
    status: str  # "downloaded" or "skipped"
    size: int
    part: Path | None  # the verified temporary copy of a downloaded object


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def part_path(dest: Path) -> Path:
    """A hidden, unique temporary name beside ``dest`` (same filesystem: rename is atomic)."""
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}{PART_SUFFIX}")


def remove_parts(*dirs: Path) -> int:
    """Delete temporary files a killed run left behind; returns how many."""
    removed = 0
    for directory in dirs:
        for part in Path(directory).glob(f".*{PART_SUFFIX}"):
            part.unlink(missing_ok=True)
            removed += 1
    return removed


def fetch(client: Any, bucket: str, key: str, dest: Path, reference: Path | None) -> Fetched:
    """Fetch ``key`` to a temporary file beside ``dest`` unless ``reference`` is current.

    Raises ObjectMissing (404) or FetchFailed (anything else, after botocore's retries).
    """
    where = f"s3://{bucket}/{key}"
    extra = {}
    if reference is not None:
        extra["IfNoneMatch"] = f'"{md5_file(reference)}"'
    try:
        response = client.get_object(Bucket=bucket, Key=key, **extra)
    except ClientError as err:
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = err.response.get("Error", {}).get("Code", "")
        if status == 304 and reference is not None:
            return Fetched("skipped", reference.stat().st_size, None)
        if status == 404 or code in ("NoSuchKey", "404"):
            raise ObjectMissing(f"{where} does not exist (404)") from err
        if status == 403:
            raise FetchFailed(f"{where}: access denied (403); is the bucket public?") from err
        raise FetchFailed(f"{where}: {code or status} {err}") from err
    except BotoCoreError as err:
        raise FetchFailed(f"{where}: {err}") from err

    part = part_path(dest)
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with part.open("wb") as out:
            for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        expected = response.get("ContentLength")
        if expected is not None and size != int(expected):
            raise FetchFailed(f"{where}: got {size} bytes, expected {expected}")
        etag = str(response.get("ETag", "")).strip('"')
        if _MD5_ETAG.match(etag) and digest.hexdigest() != etag:
            raise FetchFailed(f"{where}: MD5 {digest.hexdigest()} does not match ETag {etag}")
    except BotoCoreError as err:
        part.unlink(missing_ok=True)
        raise FetchFailed(f"{where}: connection lost while reading ({err})") from err
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return Fetched("downloaded", size, part)


def check_jpeg(path: Path, max_pixels: int) -> str | None:
    """Why ``path`` is not a whole, decodable JPEG of a sane size; None when it is."""
    try:
        with Image.open(path) as image:
            if image.format != "JPEG":
                return f"not a JPEG (Pillow reads it as {image.format})"
            width, height = image.size
            if width * height > max_pixels:
                return (
                    f"{width}x{height} pixels exceeds the decompression-bomb limit of "
                    f"{max_pixels} pixels"
                )
            image.load()  # the full decode: catches truncation and corrupt scans
    except Image.DecompressionBombError as err:
        return f"decompression bomb: {err}"
    except UnidentifiedImageError:
        return "not an image (Pillow cannot identify it)"
    # What Pillow's decoders raise on a crafted or damaged file.
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError,
            RecursionError) as err:
        return f"does not decode: {type(err).__name__}: {err}"
    return None


def unstorable(image_id: str, directory: Path) -> str | None:
    """Why ``image_id`` cannot name a file in ``directory`` (with the temporary suffix a
    download uses); None when it can."""
    if not image_id or image_id in (".", "..") or "\0" in image_id or os.sep in image_id:
        return f"id {short(image_id)} cannot be a file name"
    longest = len(os.fsencode(part_path(directory / f"{image_id}.json.reason.txt").name))
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if longest > limit:
        return (f"id {short(image_id, 40)} is {len(image_id)} characters: its files' names "
                f"would exceed this filesystem's {limit}-byte limit")
    return None


@dataclass(frozen=True)
class BinResult:
    image_id: str
    count: int
    status: str  # downloaded | skipped | failed | rejected
    bytes: int = 0
    reason: str = ""
    missing: bool = False  # failed because an object is not in the bucket
    label_issue: str | None = None


@dataclass(frozen=True)
class Layout:
    """Where the bins live in the bucket and on disk."""

    bucket: str
    image_prefix: str
    metadata_prefix: str
    data_dir: Path

    @property
    def dirs(self) -> tuple[Path, Path, Path]:
        return (self.data_dir / IMAGES, self.data_dir / METADATA, self.data_dir / REJECTED)


class BinFetcher:
    """Fetches, checks and places one bin (photo + metadata); safe to call from threads."""

    def __init__(self, client: Any, layout: Layout, max_pixels: int) -> None:
        self.client = client
        self.layout = layout
        self.max_pixels = int(max_pixels)
        for directory in layout.dirs:
            directory.mkdir(parents=True, exist_ok=True)

    def __call__(self, image_id: str, count: int) -> BinResult:
        images, metadata, rejected = self.layout.dirs
        files = {
            "metadata": (f"{self.layout.metadata_prefix}{image_id}.json",
                         metadata / f"{image_id}.json"),
            "image": (f"{self.layout.image_prefix}{image_id}.jpg", images / f"{image_id}.jpg"),
        }
        reason = unstorable(image_id, rejected)
        if reason:
            return BinResult(image_id, count, "rejected", reason=reason)
        fetched: dict[str, Fetched] = {}
        try:
            for name, (key, dest) in files.items():
                reference = _first_file(dest, rejected / dest.name)
                fetched[name] = fetch(self.client, self.layout.bucket, key, dest, reference)
            return self._place(image_id, count, files, fetched)
        except ObjectMissing as err:
            return BinResult(image_id, count, "failed", reason=str(err), missing=True)
        except FetchFailed as err:
            return BinResult(image_id, count, "failed", reason=str(err))
        except OSError as err:  # this bin's files cannot be written; the run goes on
            status = "rejected" if err.errno in (errno.ENAMETOOLONG, errno.EINVAL) else "failed"
            return BinResult(image_id, count, status,
                             reason=f"cannot store its files: {err.strerror or err}")
        finally:
            for item in fetched.values():
                if item.part is not None:
                    with contextlib.suppress(OSError):
                        item.part.unlink(missing_ok=True)

    def _place(
        self,
        image_id: str,
        count: int,
        files: dict[str, tuple[str, Path]],
        fetched: dict[str, Fetched],
    ) -> BinResult:
        rejected_dir = self.layout.dirs[2]
        meta_file = _current(files["metadata"][1], rejected_dir, fetched["metadata"])
        reasons: dict[str, str | None] = {}
        label_issue = None
        try:
            meta = parse_metadata(
                json.loads(meta_file.read_bytes()), image_id, source=files["metadata"][0]
            )
            reasons["metadata"] = None
            issues = []
            if meta.expected_quantity != count:
                issues.append(
                    f"EXPECTED_QUANTITY is {meta.expected_quantity}, the file list says {count}"
                )
            if not meta.consistent:
                issues.append(f"items' quantities add up to {meta.items_quantity}")
            label_issue = "; ".join(issues) or None
        except DataError as err:
            reasons["metadata"] = str(err)
        except RecursionError:
            reasons["metadata"] = "metadata is not valid JSON (nested too deeply to parse)"
        except UNPARSEABLE as err:
            reasons["metadata"] = f"metadata is not valid JSON ({err})"
        image = fetched["image"]
        if image.part is not None:
            reasons["image"] = check_jpeg(image.part, self.max_pixels)
        elif not files["image"][1].is_file():  # skipped against its rejected copy
            reasons["image"] = _reason_of(rejected_dir / files["image"][1].name)
        else:
            reasons["image"] = None
        for name, (_, dest) in files.items():
            _settle(dest, rejected_dir / dest.name, fetched[name], reasons[name])
        size = sum(item.size for item in fetched.values() if item.part is not None)
        bad = "; ".join(f"{name}: {why}" for name, why in reasons.items() if why)
        if bad:
            return BinResult(image_id, count, "rejected", size, bad, label_issue=label_issue)
        status = "downloaded" if any(f.part for f in fetched.values()) else "skipped"
        return BinResult(image_id, count, status, size, label_issue=label_issue)


def _first_file(*paths: Path) -> Path | None:
    return next((path for path in paths if path.is_file()), None)


def _current(dest: Path, rejected_dir: Path, fetched: Fetched) -> Path:
    """The file holding the current content of ``dest``: new download, kept or rejected copy."""
    if fetched.part is not None:
        return fetched.part
    return dest if dest.is_file() else rejected_dir / dest.name


def _reason_of(rejected: Path) -> str:
    note = rejected.with_name(rejected.name + ".reason.txt")
    return note.read_text().strip() if note.is_file() else "rejected by an earlier run"


def _settle(dest: Path, rejected: Path, fetched: Fetched, reason: str | None) -> None:
    """Rename a checked download into place, or into rejected/ with its reason beside it."""
    note = rejected.with_name(rejected.name + ".reason.txt")
    if fetched.part is None:
        if reason and dest.is_file():  # a kept file that no longer passes: move it aside
            os.replace(dest, rejected)
            write_text_atomic(note, reason + "\n")
        return
    if reason:
        write_text_atomic(note, reason + "\n")
        os.replace(fetched.part, rejected)
        dest.unlink(missing_ok=True)
    else:
        os.replace(fetched.part, dest)
        rejected.unlink(missing_ok=True)
        note.unlink(missing_ok=True)


def download_bins(
    labels: Mapping[str, int],
    fetcher: BinFetcher,
    workers: int,
    progress: bool,
) -> list[BinResult]:
    """Fetch every ``{image_id: count}`` bin with ``workers`` threads, showing a progress bar.

    On Ctrl-C the queued bins are cancelled, the ones in flight finish (so none is left half
    written), and KeyboardInterrupt is raised again.
    """
    results: list[BinResult] = []
    started = time.monotonic()
    total_bytes = 0
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[volume]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("bins", total=len(labels), volume="0.0 MB")
        executor = ThreadPoolExecutor(max_workers=max(1, int(workers)))
        try:
            futures = [executor.submit(fetcher, i, c) for i, c in labels.items()]
            for result in _completed(futures):
                results.append(result)
                total_bytes += result.bytes
                rate = total_bytes / 1e6 / max(time.monotonic() - started, 1e-9)
                volume = f"{total_bytes / 1e6:.1f} MB {rate:.2f} MB/s"
                bar.update(task, advance=1, volume=volume)
        except BaseException:
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        executor.shutdown(wait=True)
    return results


def _completed(futures: list[Future[BinResult]]) -> Iterator[BinResult]:
    for future in as_completed(futures):
        yield future.result()
