"""A user's own bins made of the real ABID sample: a folder per count and a table of path,count
(counts 0-7 here: an empty-bin class and more than five)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from bincount.data.abid import read_metadata

COUNTS = list(range(8))  # 0..7
PER_COUNT = 5  # the sample has 5 empty bins


def sample_by_count(sample: Path, counts: list[int] = COUNTS, per_count: int = PER_COUNT
                    ) -> dict[int, list[str]]:
    """``{count: [image id, ...]}``: the first ``per_count`` sample photos of each count."""
    found: dict[int, list[str]] = {c: [] for c in counts}
    for path in sorted((sample / "metadata").glob("*.json")):
        count = read_metadata(path).expected_quantity
        if count in found and len(found[count]) < per_count:
            found[count].append(path.stem)
    return found


def make_folder_set(sample: Path, root: Path, counts: list[int] = COUNTS,
                    per_count: int = PER_COUNT) -> dict[str, int]:
    """``<root>/<count>/bin-<id>.jpg``; returns ``{relative path: count}``."""
    labels = {}
    for count, ids in sample_by_count(sample, counts, per_count).items():
        (root / str(count)).mkdir(parents=True, exist_ok=True)
        for image_id in ids:
            dest = root / str(count) / f"bin-{image_id}.jpg"
            shutil.copy(sample / "images" / f"{image_id}.jpg", dest)
            labels[f"{count}/bin-{image_id}.jpg"] = count
    return labels


def make_table_set(sample: Path, folder: Path, name: str = "labels.csv",
                   counts: list[int] = COUNTS, per_count: int = PER_COUNT,
                   expected_shift: dict[str, int] | None = None) -> Path:
    """``<folder>/photos/<id>.jpg`` and a table (CSV or JSONL by ``name``) of path,count,expected
    with paths relative to the table; ``expected`` is the count, shifted for the ids given."""
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    rows = []
    for count, ids in sample_by_count(sample, counts, per_count).items():
        for image_id in ids:
            shutil.copy(sample / "images" / f"{image_id}.jpg", folder / "photos")
            expected = count + (expected_shift or {}).get(image_id, 0)
            rows.append({"path": f"photos/{image_id}.jpg", "count": count, "expected": expected})
    table = folder / name
    if name.endswith(".jsonl"):
        table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        with table.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "count", "expected"])
            writer.writeheader()
            writer.writerows(rows)
    return table
