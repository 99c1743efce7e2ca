"""The split manifest: stratified by count, seeded, written once beside the data."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bincount.data.abid import IMAGES, DataError, read_file_list
from bincount.files import write_json_atomic

MANIFEST = "splits.json"
SPLITS = ("train", "val", "test")


def file_checksum(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_ratios(ratios: object, key: str = "splits") -> tuple[float, float, float]:
    """The train/val/test ratios as floats; else a DataError naming ``key``."""
    values = list(ratios) if isinstance(ratios, Sequence) and not isinstance(ratios, str) else []
    numbers = all(isinstance(r, int | float) and not isinstance(r, bool) for r in values)
    if (len(values) != len(SPLITS) or not numbers or any(r < 0 for r in values)
            or abs(sum(values) - 1) > 1e-6):
        shown = values if values else ratios
        raise DataError(
            f"{key}: expected three non-negative numbers summing to 1, got {shown!r}"
        )
    return float(values[0]), float(values[1]), float(values[2])


def stratified_split(labels: dict[str, int], ratios: Sequence[float], seed: int) -> dict[str, str]:
    """Assign every id to train/val/test so each count keeps the same proportions."""
    ratios = check_ratios(ratios)
    rng = random.Random(seed)
    assignment: dict[str, str] = {}
    for count in sorted(set(labels.values())):
        ids = sorted(i for i, c in labels.items() if c == count)
        rng.shuffle(ids)
        n_train = round(len(ids) * ratios[0])
        n_val = round(len(ids) * ratios[1])
        for position, image_id in enumerate(ids):
            split = (
                "train" if position < n_train else "val" if position < n_train + n_val else "test"
            )
            assignment[image_id] = split
    return assignment


def build_manifest(file_list: Path, ratios: Sequence[float], seed: int) -> dict[str, Any]:
    labels = read_file_list(file_list)
    assignment = stratified_split(labels, ratios, seed)
    return {
        "file_list": Path(file_list).name,
        "file_list_sha256": file_checksum(file_list),
        "seed": seed,
        "ratios": [float(r) for r in ratios],
        "images": [
            {"id": image_id, "count": labels[image_id], "split": assignment[image_id]}
            for image_id in sorted(labels)
        ],
    }


def ensure_manifest(
    data_dir: Path,
    ratios: Sequence[float],
    seed: int,
    file_list: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``<data_dir>/splits.json`` once; reuse it while its inputs are unchanged.

    A manifest made from another file list, seed or ratios is never replaced silently:
    that raises DataError unless ``overwrite`` is set.
    """
    data_dir = Path(data_dir)
    file_list = Path(file_list) if file_list else data_dir / "file_list.json"
    return write_manifest_once(data_dir / MANIFEST, build_manifest(file_list, ratios, seed),
                               overwrite)


def items_checksum(entries: Sequence[tuple[str, int, str | None]]) -> str:
    """SHA-256 of a labelled set's (id, count, fixed split) rows, in id order: what a
    folder or table manifest was made from (moving the set elsewhere leaves it unchanged)."""
    rows = sorted([str(i), int(c), s] for i, c, s in entries)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def build_items_manifest(
    source: str, entries: Sequence[dict[str, Any]], ratios: Sequence[float], seed: int
) -> dict[str, Any]:
    """The manifest of a folder or table set: ``entries`` hold ``id`` (the photo's path,
    relative to the data dir or absolute), ``count``, and optionally ``split`` (fixed by the
    table) and ``expected``. Rows without a split are split stratified by count, seeded."""
    free = {e["id"]: int(e["count"]) for e in entries if not e.get("split")}
    assignment = stratified_split(free, ratios, seed)
    images = []
    for e in sorted(entries, key=lambda e: e["id"]):
        image = {"id": e["id"], "path": e["id"], "count": int(e["count"]),
                 "split": e.get("split") or assignment[e["id"]]}
        if e.get("split"):
            image["split_fixed"] = True  # by the table: kept when the set is uploaded
        if e.get("expected") is not None:
            image["expected"] = int(e["expected"])
        images.append(image)
    return {
        "source": source,
        "inputs_sha256": items_checksum(
            [(e["id"], e["count"], e.get("split") or None) for e in entries]),
        "seed": seed,
        "ratios": [float(r) for r in ratios],
        "images": images,
    }


def write_manifest_once(path: Path, wanted: dict[str, Any], overwrite: bool) -> Path:
    """Write ``wanted`` to ``path`` unless a manifest made from the same inputs is there; one made
    from other inputs (set, seed or ratios) is refused unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        existing = load_manifest(path)
        keys = [k for k in ("file_list_sha256", "inputs_sha256", "seed", "ratios") if k in wanted]
        changed = [k for k in keys if existing.get(k) != wanted[k]]
        if changed:
            raise DataError(
                f"{path} was made with other inputs ({', '.join(changed)} differ); "
                "refusing to re-split silently. Pass prepare.overwrite_splits=true "
                "(or data.overwrite_splits=true) to write a new split."
            )
        return path
    write_json_atomic(path, wanted)
    return path


def load_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    images = manifest.get("images") if isinstance(manifest, dict) else None
    if not isinstance(images, list):
        raise DataError(f"{path}: expected an object with an 'images' list")
    for n, entry in enumerate(images):
        if not {"id", "count", "split"} <= set(entry) or entry["split"] not in SPLITS:
            raise DataError(
                f"{path}: images[{n}] must have id, count and split (one of {SPLITS}), got {entry}"
            )
    return manifest


def split_ids(manifest: dict[str, Any], split: str) -> list[tuple[str, int]]:
    """``[(image_id, count), ...]`` of one split, in manifest order."""
    return [(str(e["id"]), int(e["count"])) for e in manifest["images"] if e["split"] == split]


def image_file(data_dir: Path, entry: dict[str, Any]) -> Path:
    """Where a manifest entry's photo is: its ``path`` (folder and table sets: relative to the
    data dir, or absolute), else ABID's ``images/<id>.jpg``."""
    if entry.get("path"):
        return Path(data_dir) / str(entry["path"])
    return Path(data_dir) / IMAGES / f"{entry['id']}.jpg"


def split_files(
    data_dir: Path, manifest: dict[str, Any], split: str
) -> list[tuple[str, int, Path]]:
    """``[(image_id, count, photo path), ...]`` of one split, in manifest order, any source."""
    return [(str(e["id"]), int(e["count"]), image_file(data_dir, e))
            for e in manifest["images"] if e["split"] == split]
