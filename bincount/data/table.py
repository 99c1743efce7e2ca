"""A table of photos: CSV (a header row) or JSON Lines, local or ``s3://``.

Columns: ``path`` (relative to the table's folder, absolute, or ``s3://``), ``count`` (training
only), optional ``split`` (train/val/test: fixes that photo's split) and ``expected`` (the count
a label source says, for reconciliation). A bad row is refused naming the file and the row.
Photos on S3 (and every photo of an ``s3://`` table) are copied once into a local folder.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bincount.data.abid import DataError, short
from bincount.data.sources import LabelledSet, Photo, mirror_dir, photo_id, photo_problem
from bincount.data.splits import SPLITS
from bincount.files import atomic_path

COLUMNS = ("path", "count", "split", "expected")
MAX_COUNT = 10**6


@dataclass(frozen=True)
class Row:
    """One table row as written, with its number (the file's line number: the header is 1)."""

    number: int
    path: str
    count: str | None
    split: str | None
    expected: str | None


def is_s3(text: str) -> bool:
    return str(text).startswith("s3://")


def s3_object(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key:
        raise DataError(f"{uri}: expected s3://<bucket>/<key>")
    return bucket, key


def _client() -> Any:
    import boto3  # the user's own credentials and AWS_ENDPOINT_URL, as the AWS CLI reads them

    return boto3.client("s3")


def read_text(table: str) -> str:
    """The table's text, from a file or S3."""
    if is_s3(table):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = s3_object(table)
        try:
            return _client().get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        except (ClientError, BotoCoreError) as err:
            raise DataError(f"{table}: cannot be read from S3 ({err})") from err
    path = Path(table)
    if not path.is_file():
        raise DataError(f"{table}: no such table (expected a .csv or .jsonl file of path,count)")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{table}: cannot be read as UTF-8 text ({err})") from err


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_rows(table: str, text: str, need_count: bool) -> list[Row]:
    """The rows of a CSV (header row) or JSONL table; a missing column is refused naming it."""
    jsonl = table.lower().endswith((".jsonl", ".ndjson"))
    records: list[tuple[int, dict[str, Any]]] = []
    if jsonl:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{table}, line {number}: not a JSON object ({err})") from err
            if not isinstance(record, dict):
                raise DataError(f"{table}, line {number}: expected a JSON object like "
                                '{"path": "a.jpg", "count": 3}')
            records.append((number, record))
        found = set().union(*(r.keys() for _, r in records)) if records else set()
    else:
        reader = csv.DictReader(io.StringIO(text))
        found = {(name or "").strip() for name in reader.fieldnames or []}
        for record in reader:
            records.append((reader.line_num, {(k or "").strip(): v for k, v in record.items()}))
    wanted = ("path", "count") if need_count else ("path",)
    for column in wanted:
        if column not in found:
            raise DataError(f"{table}: no {column!r} column (expected columns "
                            f"{','.join(COLUMNS)}; found {', '.join(sorted(found)) or 'none'})")
    if not records:
        raise DataError(f"{table}: no rows")
    return [Row(n, _cell(r.get("path")) or "", _cell(r.get("count")), _cell(r.get("split")),
                _cell(r.get("expected"))) for n, r in records]


def count_value(table: str, row: Row, column: str, value: str | None) -> int:
    """A non-negative integer cell (``3``, ``3.0``), else a DataError naming file, row, column."""
    try:
        number = float(value) if value is not None else float("nan")
    except ValueError:
        number = float("nan")
    if not (0 <= number <= MAX_COUNT) or number != int(number):
        raise DataError(f"{table}, row {row.number}: {column} {short(value)} is not an item "
                        "count (expected a non-negative integer)")
    return int(number)


def fetch(uri: str, dest: Path) -> None:
    """Copy one S3 object to ``dest`` (kept when already there)."""
    if dest.is_file():
        return
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = s3_object(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(dest) as tmp:
            _client().download_file(bucket, key, str(tmp))
    except (ClientError, BotoCoreError) as err:
        raise DataError(f"{uri}: cannot be copied from S3 ({err})") from err


def locate(table: str, row: Row, data_dir: Path) -> Path:
    """The local file of a row's photo: relative to the table's folder (its S3 prefix for an
    ``s3://`` table, copied into ``data_dir``), absolute, or an ``s3://`` object copied into
    ``data_dir/s3/<bucket>/<key>``."""
    if not row.path:
        raise DataError(f"{table}, row {row.number}: empty path")
    if is_s3(row.path):
        bucket, key = s3_object(row.path)
        dest = data_dir / "s3" / bucket / key
        fetch(row.path, dest)
        return dest
    if is_s3(table):
        if Path(row.path).is_absolute() or ".." in Path(row.path).parts:
            raise DataError(f"{table}, row {row.number}: path {row.path!r} must be relative to "
                            "the table's S3 folder (or an s3:// URI)")
        dest = data_dir / row.path
        fetch(f"{table.rsplit('/', 1)[0]}/{row.path}", dest)
        return dest
    path = Path(row.path)
    return path if path.is_absolute() else Path(table).parent / path


def read_labelled_table(table: str, data_dir: Path | None, cache_dir: Path | None) -> LabelledSet:
    """The photos a training table lists. ``data_dir`` (where splits.json goes): given, else the
    table's folder; for an ``s3://`` table a local copy under ``cache_dir``."""
    if data_dir is None:
        if is_s3(table):
            if cache_dir is None:
                raise DataError(f"data.cache_dir: needed to copy {table} and its photos")
            data_dir = mirror_dir(cache_dir, table)
        else:
            data_dir = Path(table).parent
    rows = parse_rows(table, read_text(table), need_count=True)
    photos: list[Photo] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for row in rows:
        count = count_value(table, row, "count", row.count)
        expected = (None if row.expected is None
                    else count_value(table, row, "expected", row.expected))
        if row.split is not None and row.split not in SPLITS:
            raise DataError(f"{table}, row {row.number}: split {short(row.split)} is not one of "
                            f"{', '.join(SPLITS)}")
        path = locate(table, row, data_dir)
        if not path.is_file():
            raise DataError(f"{table}, row {row.number}: {path} does not exist")
        image_id = photo_id(path, data_dir)
        if image_id in seen:
            raise DataError(f"{table}, row {row.number}: {row.path} is listed again "
                            f"(first at row {seen[image_id]})")
        seen[image_id] = row.number
        problem = photo_problem(path)
        if problem:
            skipped.append((f"{path} (row {row.number})", problem))
            continue
        photos.append(Photo(image_id, count, row.split, expected))
    return LabelledSet("table", data_dir, photos, skipped)
