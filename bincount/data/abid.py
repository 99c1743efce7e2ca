"""The ABID on-disk layout: metadata parsing and the Udacity-style file list.

A data directory holds ``images/<id>.jpg``, ``metadata/<id>.json`` and ``file_list.json``
(keys "1".."5" -> lists of ``data/metadata/<id>.json``). Ids are strings: ``1000`` and
``01000`` are different images.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bincount.errors import BincountError
from bincount.files import write_json_atomic

FILE_LIST = "file_list.json"
IMAGES = "images"
METADATA = "metadata"


class DataError(BincountError, ValueError):
    """A data file a user supplied is not what the project expects."""


@dataclass(frozen=True)
class Item:
    """One product (ASIN) in a bin; every field but the ASIN may be unknown."""

    asin: str
    name: str | None = None
    quantity: int | None = None
    length_in: float | None = None
    width_in: float | None = None
    height_in: float | None = None
    weight_lb: float | None = None


@dataclass(frozen=True)
class BinMetadata:
    image_id: str
    expected_quantity: int
    items: tuple[Item, ...] = field(default_factory=tuple)

    @property
    def items_quantity(self) -> int | None:
        """Sum of the listed items' quantities, or None when any is unknown."""
        quantities = [item.quantity for item in self.items]
        if not quantities or any(q is None for q in quantities):
            return None
        return sum(q for q in quantities if q is not None)

    @property
    def consistent(self) -> bool:
        """False when the item list contradicts EXPECTED_QUANTITY."""
        total = self.items_quantity
        return total is None or total == self.expected_quantity


# Past this, a number in metadata is not a quantity or a size but garbage (and an int this long
# does not even convert to a float): it reads as unknown.
MAX_NUMBER = 1e15
# What json.loads raises on text it cannot turn into objects, besides JSONDecodeError: nesting
# deeper than the interpreter's stack, an integer of more digits than Python converts.
UNPARSEABLE = (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError)


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 400-digit number stays readable)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _number(value: Any) -> float | None:
    """A dimension is ``{"unit": ..., "value": x}``, a bare number, or null."""
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and abs(value) > MAX_NUMBER:  # float() would overflow
        return None
    return float(value) if math.isfinite(value) and abs(value) <= MAX_NUMBER else None


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


def parse_metadata(data: dict[str, Any], image_id: str, source: str = "<metadata>") -> BinMetadata:
    """Parse one ABID metadata document tolerantly (nulls and missing optional fields)."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object, got {type(data).__name__}")
    quantity = _int(data.get("EXPECTED_QUANTITY"))
    if quantity is None or quantity < 0:
        raise DataError(
            f"{source}: field EXPECTED_QUANTITY must be a non-negative integer, "
            f"got {short(data.get('EXPECTED_QUANTITY'))}"
        )
    raw_items = data.get("BIN_FCSKU_DATA") or {}
    if not isinstance(raw_items, dict):
        raise DataError(f"{source}: field BIN_FCSKU_DATA must be an object keyed by ASIN")
    items = []
    for key, raw in raw_items.items():
        raw = raw if isinstance(raw, dict) else {}
        name = raw.get("name") or raw.get("normalizedName")
        items.append(
            Item(
                asin=str(raw.get("asin") or key),
                name=name if isinstance(name, str) else None,
                quantity=_int(raw.get("quantity")),
                length_in=_number(raw.get("length")),
                width_in=_number(raw.get("width")),
                height_in=_number(raw.get("height")),
                weight_lb=_number(raw.get("weight")),
            )
        )
    return BinMetadata(image_id=image_id, expected_quantity=quantity, items=tuple(items))


def read_metadata(path: Path) -> BinMetadata:
    """Read ``metadata/<id>.json``; the id is the file stem, kept as a string."""
    data = load_json(Path(path))
    meta = parse_metadata(data, image_id=Path(path).stem, source=str(path))
    if not meta.consistent:
        warnings.warn(
            f"{path}: EXPECTED_QUANTITY is {meta.expected_quantity} but the items in "
            f"BIN_FCSKU_DATA add up to {meta.items_quantity}",
            stacklevel=2,
        )
    return meta


def load_json(path: Path) -> Any:
    """The JSON document in ``path``; a DataError naming the file for anything unparseable
    (bad syntax or encoding, nesting too deep, an integer too long)."""
    try:
        return json.loads(path.read_bytes())
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from err
    except RecursionError as err:
        raise DataError(f"{path}: not valid JSON (nested too deeply to parse)") from err
    except UNPARSEABLE as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err


def id_from_path(entry: str) -> str:
    """``data/metadata/01000.json`` -> ``"01000"`` (never an int)."""
    return Path(entry).stem


def read_file_list(path: Path) -> dict[str, int]:
    """Read a Udacity-format file list into ``{image_id: count}``.

    Raises DataError naming the file when a key is not a count or an id is listed twice
    with different counts.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file list (expected a JSON file)")
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f'{path}: expected an object like {{"1": ["data/metadata/<id>.json"]}}')
    labels: dict[str, int] = {}
    for key, entries in data.items():
        if not (key.isascii() and key.isdigit() and len(key) <= 6):
            raise DataError(f"{path}: key {short(key)} is not an item count (expected '1'..'5')")
        if not isinstance(entries, list):
            raise DataError(f"{path}: key {key!r} must hold a list of metadata paths")
        for entry in entries:
            if not isinstance(entry, str):
                raise DataError(f"{path}: under key {key!r}, {short(entry)} is not a metadata "
                                "path (expected a string like 'data/metadata/<id>.json')")
            image_id = id_from_path(str(entry))
            if labels.get(image_id, int(key)) != int(key):
                raise DataError(
                    f"{path}: id {image_id!r} is listed under counts {labels[image_id]} and {key}"
                )
            labels[image_id] = int(key)
    return labels


def write_file_list(path: Path, labels: dict[str, int]) -> None:
    """Write ``{image_id: count}`` in the Udacity format (atomically)."""
    grouped: dict[str, list[str]] = {}
    for image_id, count in labels.items():
        grouped.setdefault(str(count), []).append(f"data/{METADATA}/{image_id}.json")
    ordered = {key: grouped[key] for key in sorted(grouped, key=int)}
    write_json_atomic(Path(path), ordered)
