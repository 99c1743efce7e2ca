"""A user's own bins: the labelled photo list of a folder per count or a table of path,count.

Every source ends in a :class:`LabelledSet` (photos with their counts, fixed splits and expected
counts; the unreadable ones named with the reason), from which the same split manifest, cache,
datasets and DataModule follow (:mod:`bincount.data.splits`). ABID keeps its own layout
(``images/<id>.jpg`` + ``file_list.json``); a folder or table manifest names every photo's path.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from bincount.data.abid import DataError
from bincount.data.dataset import UNREADABLE
from bincount.data.splits import (
    MANIFEST,
    build_items_manifest,
    load_manifest,
    write_manifest_once,
)
from bincount.files import write_json_atomic

SOURCES = ("abid", "folder", "table")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Photo:
    """One labelled photo: ``id`` is its path relative to the data dir (or absolute)."""

    id: str
    count: int
    split: str | None = None  # fixed by the table's split column
    expected: int | None = None  # the label source's count (reconciliation)


@dataclass(frozen=True)
class LabelledSet:
    source: str  # folder | table
    data_dir: Path  # where splits.json is written; relative photo ids start here
    photos: list[Photo]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def counts(self) -> list[int]:
        return sorted({p.count for p in self.photos})

    def entries(self) -> list[dict[str, Any]]:
        return [{"id": p.id, "count": p.count, "split": p.split, "expected": p.expected}
                for p in self.photos]

    def write_manifest(self, ratios: Any, seed: int, overwrite: bool) -> Path:
        """``<data_dir>/splits.json`` once; refused when made from other photos, seed or ratios."""
        if not self.photos:
            raise DataError(f"{self.data_dir}: no readable photos to split")
        manifest = build_items_manifest(self.source, self.entries(), ratios, seed)
        if self.skipped:
            manifest["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        path = write_manifest_once(self.data_dir / MANIFEST, manifest, overwrite)
        self._take_up_expected(path, manifest)
        return path

    @staticmethod
    def _take_up_expected(path: Path, wanted: dict[str, Any]) -> None:
        """A label source's ``expected`` counts do not decide the split: when they change (the
        inventory system corrected), the kept manifest takes them up, its splits unchanged, so
        an upload's labels.csv carries the table's values, not the first run's."""
        existing = load_manifest(path)
        fresh = {e["id"]: e.get("expected") for e in wanted["images"]}
        if all(e.get("expected") == fresh.get(e["id"]) for e in existing["images"]):
            return
        for entry in existing["images"]:
            entry.pop("expected", None)
            if fresh.get(entry["id"]) is not None:
                entry["expected"] = fresh[entry["id"]]
        write_json_atomic(path, existing)
        log.info("%s: expected counts updated from the table (splits unchanged)", path)

    def summary(self) -> str:
        per_count = Counter(p.count for p in self.photos)
        text = ", ".join(f"{c}: {per_count[c]}" for c in self.counts)
        return (f"{len(self.photos)} photos in {self.data_dir} by count ({text}); "
                f"{len(self.skipped)} unreadable left out")


def photo_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable photo (from its header: no pixel is decoded), or None."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except UNREADABLE as err:
        return f"not a readable image ({err})"
    return None if width > 0 and height > 0 else "an image without pixels"


def photo_id(path: Path, data_dir: Path) -> str:
    """The photo's path relative to ``data_dir`` (posix), or its absolute path when outside."""
    path = Path(os.path.normpath(path.absolute()))
    try:
        return path.relative_to(Path(os.path.normpath(data_dir.absolute()))).as_posix()
    except ValueError:
        return path.as_posix()


def scan_folder(root: Path) -> LabelledSet:
    """Photos under ``<root>/<count>/`` (torchvision's ImageFolder convention, nested folders
    included); a folder name that is not a count, or a count folder without photos, is refused
    naming it."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a directory (expected photos under "
                        f"<root>/<count>/, e.g. {root}/3/bin.jpg)")
    photos: list[Photo] = []
    skipped: list[tuple[str, str]] = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        if not (folder.name.isascii() and folder.name.isdigit()):
            raise DataError(f"{folder}: folder name {folder.name!r} is not an item count "
                            "(expected one folder per count, named 0, 1, 2, ...)")
        files = sorted(p for p in folder.rglob("*") if p.is_file()
                       and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise DataError(f"{folder}: empty class folder (expected photos "
                            f"{', '.join(IMAGE_SUFFIXES)} in it; remove it if count "
                            f"{int(folder.name)} has none)")
        for path in files:
            problem = photo_problem(path)
            if problem:
                skipped.append((str(path), problem))
            else:
                photos.append(Photo(photo_id(path, root), int(folder.name)))
    if not folders:
        raise DataError(f"data.root: {root} has no count folders (expected photos under "
                        f"<root>/<count>/, e.g. {root}/3/bin.jpg)")
    return LabelledSet("folder", root, photos, skipped)


def mirror_dir(cache_dir: Path, uri: str) -> Path:
    """Where an ``s3://`` table and its photos are copied: one dir per table URI."""
    tag = hashlib.sha256(uri.encode()).hexdigest()[:10]
    return Path(cache_dir) / "tables" / f"{Path(uri).stem}-{tag}"


def labelled_set(
    *, source: str, root: str | Path | None, table: str | None, data_dir: str | Path | None,
    cache_dir: str | Path | None,
) -> LabelledSet:
    """The photos of a folder or table source, as ``data.*`` (or ``prepare.*``) names them."""
    if source == "folder":
        if not root:
            raise DataError("data.root: expected the folder of count folders (data=folder)")
        return scan_folder(Path(str(root)))
    if source == "table":
        from bincount.data.table import read_labelled_table

        if not table:
            raise DataError("data.table: expected a CSV or JSONL file of path,count (data=table)")
        return read_labelled_table(str(table), None if not data_dir else Path(str(data_dir)),
                                   None if not cache_dir else Path(str(cache_dir)))
    raise DataError(f"data.source: expected one of {', '.join(SOURCES)}, got {source!r}")
