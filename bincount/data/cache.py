"""Preprocessed image cache: every photo decoded once, stored as uint8, read by memory map.

Per split, ``<split>.u8`` holds the photos back to back as CHW uint8 arrays, resized to the
training size's square (as the transforms' Resize does, so training needs no resize per epoch),
and ``<split>.json`` indexes them (id, count, offset, shape). The index records a key (the
manifest's SHA-256 and the resize settings); a split whose key differs from the wanted one is
rebuilt. The index is renamed into place last, so a killed build leaves no index that points
into a half-written file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from bincount.data.abid import DataError
from bincount.data.dataset import UNREADABLE, load_rgb, seeded_transform
from bincount.data.splits import MANIFEST, SPLITS, file_checksum, load_manifest, split_files
from bincount.files import atomic_path, write_json_atomic

CACHE_FORMAT = 2  # 2: square images at the training size (1: short side only)
BUILD_LOCK = ".build.lock"
INTERPOLATION = InterpolationMode.BILINEAR  # what the training transforms' Resize uses


def cache_location(cache_dir: Path, data_dir: Path) -> Path:
    """One cache per data directory: ``<cache_dir>/preprocessed/<name>-<hash of its path>``."""
    resolved = Path(data_dir).resolve()
    tag = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    return Path(cache_dir) / "preprocessed" / f"{resolved.name}-{tag}"


def cache_key(manifest_path: Path, image_size: int) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "manifest_sha256": file_checksum(manifest_path),
        "size": [int(image_size), int(image_size)],
        "interpolation": INTERPOLATION.value,
        "antialias": True,
    }


def load_resized(path: Path, image_size: int) -> torch.Tensor:
    """Decode a photo the way BinImageDataset does, resize it to the training square: uint8 CHW
    (the same tensor as ``transforms.resize_transform`` makes of the file)."""
    image = F.pil_to_tensor(load_rgb(path))
    size = [int(image_size), int(image_size)]
    return F.resize(image, size, interpolation=INTERPOLATION, antialias=True)


def _read_index(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _is_current(location: Path, split: str, key: dict[str, Any]) -> bool:
    index = _read_index(location / f"{split}.json")
    data = location / f"{split}.u8"
    return (
        index is not None
        and index.get("key") == key
        and data.is_file()
        and data.stat().st_size == index.get("bytes")
    )


def _build_split(
    location: Path,
    split: str,
    items: Sequence[tuple[str, int, Path]],
    image_size: int,
    key: dict[str, Any],
    workers: int,
    bar: Progress,
) -> None:
    index_path, data_path = location / f"{split}.json", location / f"{split}.u8"
    index_path.unlink(missing_ok=True)  # from here on the old cache of this split is invalid
    for stale in location.glob(f".{data_path.name}.*.tmp"):  # a killed build's partial file
        stale.unlink(missing_ok=True)
    index: dict[str, Any] = {
        "key": key, "ids": [], "counts": [], "offsets": [], "shapes": [], "skipped": []
    }
    task = bar.add_task(f"cache {split}", total=len(items))

    def load(item: tuple[str, int, Path]) -> torch.Tensor | str:
        try:
            return load_resized(item[2], image_size)
        except UNREADABLE as err:  # includes a missing file (FileNotFoundError)
            return f"{item[2]}: {err}"

    offset = 0
    with (atomic_path(data_path) as tmp, tmp.open("wb") as out,
          ThreadPoolExecutor(max_workers=max(1, workers)) as pool):
        for (image_id, count, _), result in zip(items, _ordered(pool, load, items), strict=True):
            bar.advance(task)
            if isinstance(result, str):
                index["skipped"].append({"id": image_id, "reason": result})
                continue
            array = result.contiguous().numpy()
            out.write(array.tobytes())
            index["ids"].append(image_id)
            index["counts"].append(count)
            index["offsets"].append(offset)
            index["shapes"].append(list(array.shape))
            offset += array.nbytes
    index["bytes"] = offset
    write_json_atomic(index_path, index)
    if index["skipped"]:
        first = index["skipped"][0]["reason"]
        warnings.warn(
            f"cache {split}: {len(index['skipped'])} unreadable or missing images left out "
            f"(first: {first})",
            stacklevel=3,
        )


def _ordered(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Sequence[Any], ahead: int = 64
) -> Iterator[Any]:
    """``pool.map`` with at most ``ahead`` results in flight (bounded memory)."""
    pending = []
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.pop(0).result()
    for future in pending:
        yield future.result()


def cache_ready(data_dir: Path, cache_dir: Path, image_size: int) -> bool:
    """Whether every split's cache exists and is current for the manifest and ``image_size``."""
    manifest_path = Path(data_dir) / MANIFEST
    if not manifest_path.is_file():
        return False
    key = cache_key(manifest_path, image_size)
    location = cache_location(cache_dir, data_dir)
    return all(_is_current(location, split, key) for split in SPLITS)


def ensure_cache(
    data_dir: Path,
    cache_dir: Path,
    image_size: int,
    workers: int,
    progress: bool,
    manifest_path: Path | None = None,
) -> Path:
    """Build (or reuse) the cache of every split of ``<data_dir>/splits.json``; returns its dir.

    A split is rebuilt when its index is missing, incomplete, or keyed by another manifest or
    resize setting; otherwise it is reused untouched.
    """
    data_dir = Path(data_dir)
    manifest_path = Path(manifest_path) if manifest_path else data_dir / MANIFEST
    if not manifest_path.is_file():
        raise DataError(
            f"{manifest_path} is missing: run scripts/prepare_data.py first (it writes the split "
            "manifest the cache is built from)"
        )
    manifest = load_manifest(manifest_path)
    key = cache_key(manifest_path, image_size)
    location = cache_location(cache_dir, data_dir)
    location.mkdir(parents=True, exist_ok=True)
    # One builder at a time (runs started together on the same data); the others wait, then
    # find the cache current. The OS drops the lock of a killed builder.
    with (location / BUILD_LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stale = [split for split in SPLITS if not _is_current(location, split, key)]
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, disable=not progress) as bar:
            for split in stale:
                _build_split(location, split, split_files(data_dir, manifest, split),
                             image_size, key, workers, bar)
    return location


class CachedBinDataset(Dataset):
    """One split of the cache; items match BinImageDataset's: ``{"image", "label", "id", "index"}``.

    ``transform`` receives the cached uint8 CHW tensor, square at the training size (the same
    transforms as for JPEGs work; None hands it on as is, for the batched path). As in
    BinImageDataset, with a ``seed`` the random transform of item i in epoch e (``self.epoch``,
    set by the sampler) is seeded by (seed, e, i).
    """

    def __init__(
        self,
        location: Path,
        split: str,
        transform: Callable[[torch.Tensor], torch.Tensor] | None,
        counts: Sequence[int],
        seed: int | None = None,
    ) -> None:
        self.location = Path(location)
        self.split = split
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        index = _read_index(self.location / f"{split}.json")
        if index is None:
            raise DataError(f"{self.location / (split + '.json')}: no cache index; build it with "
                            "ensure_cache (or prepare.cache=true)")
        self.class_of = {int(count): position for position, count in enumerate(counts)}
        keep = [n for n, c in enumerate(index["counts"]) if int(c) in self.class_of]
        self.ids = [str(index["ids"][n]) for n in keep]
        self.counts = [int(index["counts"][n]) for n in keep]
        self.offsets = [int(index["offsets"][n]) for n in keep]
        self.shapes = [tuple(index["shapes"][n]) for n in keep]
        self.skipped = index["skipped"]
        self._data: np.memmap | None = None  # opened lazily: once per DataLoader worker

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}

    def raw(self, index: int) -> torch.Tensor:
        """The cached uint8 CHW tensor of item ``index``."""
        if self._data is None:
            self._data = np.memmap(self.location / f"{self.split}.u8", dtype=np.uint8, mode="r")
        shape = self.shapes[index]
        start = self.offsets[index]
        chunk = np.array(self._data[start : start + int(np.prod(shape))])
        return torch.from_numpy(chunk).view(*shape)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.raw(index)
        if self.transform is not None:
            image = seeded_transform(self.transform, image, self.seed, self.epoch, index)
        return {"image": image, "label": self.class_of[self.counts[index]], "id": self.ids[index],
                "index": index}
