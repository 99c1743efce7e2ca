"""The settings of ``scripts/prepare_data.py``, typed and checked in one place.

Built from the composed ``conf/prepare_data.yaml`` (``prepare.*`` and ``paths.data_dir``) before
anything is downloaded or written; a bad value stops the command with its key, the value and
what was expected (a :class:`BincountError`: exit 2). The defaults live in the YAML only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bincount.aws import parse_s3_uri
from bincount.data.abid import DataError
from bincount.data.sources import SOURCES
from bincount.data.splits import check_ratios
from bincount.errors import expect_bool, expect_int

RETRY_MODES = ("standard", "adaptive", "legacy")  # botocore's (legacy: accepted, not advertised)


def _optional(value: object) -> str | None:
    """None for an unset value (null or ''), else the value as text."""
    return None if value in (None, "") else str(value)


@dataclass(frozen=True)
class PrepareSettings:
    """What to download from where, how to split it, and whether to cache and upload it."""

    data_dir: Path
    source: str  # abid: download ABID; folder | table: check the user's own set (data.*)
    root: str | None  # source=folder: data.root
    table: str | None  # source=table: data.table
    own_data_dir: str | None  # source=table: data.data_dir (None: the table's folder)
    file_list: Path | None  # None: the list packaged with bincount
    per_class_limit: int | None  # None: every listed id
    bucket: str
    region: str
    endpoint_url: str | None  # None: AWS_ENDPOINT_URL when set, else AWS
    image_prefix: str
    metadata_prefix: str
    workers: int
    retry_mode: str
    max_attempts: int
    max_image_pixels: int
    progress: bool
    splits: tuple[float, float, float]
    seed: int
    overwrite_splits: bool
    upload_to: tuple[str, str] | None  # (bucket, prefix); None: no upload
    upload_endpoint_url: str | None
    upload_workers: int
    cache: bool
    cache_dir: Path
    image_size: int
    cache_workers: int

    @classmethod
    def from_cfg(cls, cfg: Any) -> PrepareSettings:
        p = cfg.prepare

        def count(key: str, least: int = 1) -> int:
            return expect_int(f"prepare.{key}", p[key], least)

        def switch(key: str) -> bool:
            return expect_bool(f"prepare.{key}", p[key])

        file_list = _optional(p.file_list)
        if file_list is not None and not Path(file_list).is_file():
            raise DataError(f"prepare.file_list: {file_list} does not exist")
        if p.retry_mode not in RETRY_MODES:
            raise DataError(
                f"prepare.retry_mode: expected 'standard' or 'adaptive', got {p.retry_mode!r}"
            )
        upload_to = _optional(p.upload_to)
        if p.source not in SOURCES:
            raise DataError(f"prepare.source: expected one of {', '.join(SOURCES)}, "
                            f"got {p.source!r}")
        data = cfg.get("data") or {}
        return cls(
            data_dir=Path(cfg.paths.data_dir),
            source=str(p.source),
            root=_optional(data.get("root")),
            table=_optional(data.get("table")),
            own_data_dir=(_optional(data.get("data_dir"))
                          if p.source == "table" == data.get("source") else None),
            file_list=None if file_list is None else Path(file_list),
            per_class_limit=None if p.per_class_limit is None else count("per_class_limit"),
            bucket=str(p.bucket),
            region=str(p.region),
            endpoint_url=_optional(p.endpoint_url),
            image_prefix=str(p.image_prefix),
            metadata_prefix=str(p.metadata_prefix),
            workers=count("workers"),
            retry_mode=str(p.retry_mode),
            max_attempts=count("max_attempts"),
            max_image_pixels=count("max_image_pixels"),
            progress=switch("progress"),
            splits=check_ratios(p.splits, "prepare.splits"),
            seed=count("seed", 0),
            overwrite_splits=switch("overwrite_splits"),
            upload_to=None if upload_to is None else parse_s3_uri(upload_to, "prepare.upload_to"),
            upload_endpoint_url=_optional(p.upload_endpoint_url),
            upload_workers=count("upload_workers"),
            cache=switch("cache"),
            cache_dir=Path(p.cache_dir),
            image_size=count("image_size"),
            cache_workers=count("cache_workers"),
        )
