"""What ``scripts/predict.py`` reads and writes: photos from files, folders, tables (CSV/JSONL,
with an optional ``expected`` column) and S3 prefixes; predictions streamed to CSV or JSON Lines,
one row per photo, resumable: a re-run skips the photos already written, and a last line torn by
a killed run is cut off first.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bincount.data.table import count_value, is_s3, parse_rows, read_text, s3_object
from bincount.errors import BincountError

IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                  ".webp": "application/x-image"}
TABLE_SUFFIXES = (".csv", ".jsonl", ".ndjson")
OUTPUT_SUFFIXES = (".csv", ".jsonl")
# The columns of a predictions file (CSV: probabilities as a JSON object of count -> p).
COLUMNS = ("image", "count", "confidence", "probabilities", "expected", "p_expected", "verdict",
           "model", "error")


@dataclass(frozen=True)
class Photo:
    """One photo to predict: a local path or an ``s3://`` URI, and its expected count."""

    image: str
    expected: int | None = None

    @property
    def content_type(self) -> str:
        return IMAGE_SUFFIXES.get(Path(self.image).suffix.lower(), "application/x-image")

    def read(self) -> bytes:
        if is_s3(self.image):
            bucket, key = s3_object(self.image)
            return _s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        return Path(self.image).read_bytes()


def _s3() -> Any:
    import boto3

    return boto3.client("s3")


def is_photo(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES and not Path(name).name.startswith(".")


def _s3_listing(prefix: str) -> list[str]:
    bucket, _, key = prefix[len("s3://"):].partition("/")
    pages = _s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
    return sorted(f"s3://{bucket}/{obj['Key']}" for page in pages
                  for obj in page.get("Contents", []) if is_photo(obj["Key"]))


def table_photos(table: str) -> list[Photo]:
    """The photos of a table (``count`` not needed): paths relative to the table's folder (or
    its S3 prefix), absolute or ``s3://``; ``expected`` when the table has that column."""
    base = table.rsplit("/", 1)[0] if is_s3(table) else str(Path(table).parent)
    photos = []
    for row in parse_rows(table, read_text(table), need_count=False):
        if not row.path:
            raise BincountError(f"{table}, row {row.number}: empty path")
        path = row.path
        if not is_s3(path) and not Path(path).is_absolute():
            path = f"{base}/{path}" if is_s3(table) else str(Path(base) / path)
        expected = (None if row.expected is None
                    else count_value(table, row, "expected", row.expected))
        photos.append(Photo(path, expected))
    return photos


def collect_photos(images: Sequence[str]) -> list[Photo]:
    """Files as given; folders expanded to their photos (nested folders too, sorted); tables
    (.csv/.jsonl) to their rows; ``s3://`` prefixes to the photos under them."""
    found: list[Photo] = []
    for entry in images:
        text = str(entry)
        if text.lower().endswith(TABLE_SUFFIXES):
            found.extend(table_photos(text))
        elif is_s3(text):
            listed = [text] if is_photo(text) else _s3_listing(text)
            if not listed:
                raise BincountError(f"images: no .jpg/.jpeg/.png/.webp objects under {text}")
            found.extend(Photo(uri) for uri in listed)
        elif Path(text).is_dir():
            inside = sorted(p for p in Path(text).rglob("*") if p.is_file() and is_photo(p.name))
            if not inside:
                raise BincountError(f"images: directory {text} holds no .jpg/.jpeg/.png files")
            found.extend(Photo(str(p)) for p in inside)
        elif Path(text).is_file():
            found.append(Photo(text))
        else:
            raise BincountError(f"images: {text} does not exist (expected an image, a folder, "
                                "a .csv/.jsonl table or an s3:// prefix)")
    return found


def _cut_torn_tail(path: Path) -> None:
    """A killed run may leave half a line: keep the file up to its last newline."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def written_images(path: Path) -> set[str]:
    """The photos a predictions file already holds (whole lines only)."""
    if not path.is_file():
        return set()
    _cut_torn_tail(path)
    text = path.read_text()
    if path.suffix.lower() == ".jsonl":
        done = set()
        for number, line in enumerate(text.splitlines(), 1):
            try:
                done.add(str(json.loads(line)["image"]))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise BincountError(f"{path}, line {number}: not a predictions row ({err}); "
                                    "move the file away to start again") from err
        return done
    reader = csv.DictReader(io.StringIO(text))
    if text and tuple(reader.fieldnames or ()) != COLUMNS:
        raise BincountError(f"{path}: its header is not {','.join(COLUMNS)}: not a "
                            "predictions file of this kind; move it away or name another")
    return {row["image"] for row in reader}


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, dict) else value


class PredictionsFile:
    """Appends rows to ``predict.output`` (CSV or JSONL), flushed after every batch."""

    def __init__(self, path: Path) -> None:
        if path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise BincountError(f"predict.output: {path} must end in .csv or .jsonl")
        self.path = path
        self.done = written_images(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.is_file() or path.stat().st_size == 0
        self._file: IO[str] = path.open("a", newline="")
        self._csv = None
        if path.suffix.lower() == ".csv":
            self._csv = csv.DictWriter(self._file, fieldnames=COLUMNS, extrasaction="ignore")
            if fresh:
                self._csv.writeheader()

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            if self._csv is not None:
                self._csv.writerow({k: _cell(row.get(k)) for k in COLUMNS})
            else:
                self._file.write(json.dumps({k: row[k] for k in COLUMNS if k in row}) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PredictionsFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
