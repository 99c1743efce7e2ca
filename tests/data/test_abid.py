"""The ABID layout: tolerant metadata parsing, the file list, ids kept as strings."""

import json
from pathlib import Path

import pytest

from bincount.data.abid import DataError, parse_metadata, read_file_list, read_metadata
from bincount.data.prepare import source_labels


def test_every_real_sample_metadata_parses(sample_dir: Path) -> None:
    paths = sorted((sample_dir / "metadata").glob("*.json"))
    metas = [read_metadata(p) for p in paths]
    assert len(metas) == 400
    assert metas[0].image_id == "00001"  # ids stay strings, zero padding kept
    assert metas[0].expected_quantity == 12
    assert {item.asin for item in metas[0].items} == {"B000C33MI2", "B0050Z27KG", "B01BV89HNU"}
    assert all(m.items_quantity in (None, m.expected_quantity) for m in metas)


def test_nulls_and_missing_fields_are_tolerated() -> None:
    meta = parse_metadata(
        {
            "EXPECTED_QUANTITY": 3,
            "BIN_FCSKU_DATA": {
                "A1": {
                    "asin": "A1",
                    "quantity": 2,
                    "name": None,
                    "height": None,
                    "weight": {"unit": "pounds", "value": None},
                },
                "A2": {"quantity": 1},
            },
        },
        image_id="01000",
    )
    assert meta.image_id == "01000"
    assert [item.asin for item in meta.items] == ["A1", "A2"]
    assert meta.items[0].height_in is None and meta.items[0].weight_lb is None
    assert meta.consistent


def test_label_that_disagrees_with_the_items_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "42.json"
    path.write_text(json.dumps({"EXPECTED_QUANTITY": 3, "BIN_FCSKU_DATA": {"X": {"quantity": 5}}}))
    with pytest.warns(UserWarning, match=r"42.json: EXPECTED_QUANTITY is 3 .* add up to 5"):
        meta = read_metadata(path)
    assert not meta.consistent


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"BIN_FCSKU_DATA": {}}', "EXPECTED_QUANTITY must be a non-negative integer"),
        ('{"EXPECTED_QUANTITY": "three"}', "EXPECTED_QUANTITY"),
    ],
)
def test_bad_metadata_names_the_file_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "7.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        read_metadata(path)
    assert str(path) in str(err.value)


def test_the_packaged_subset_list_keeps_ids_as_strings() -> None:
    labels = source_labels(None)  # what prepare_data downloads by default
    assert len(labels) == 10441
    per_count = {c: sum(1 for v in labels.values() if v == c) for c in range(1, 6)}
    assert per_count == {1: 1228, 2: 2299, 3: 2666, 4: 2373, 5: 1875}
    assert "1000" in labels and "01000" in labels  # different images


def test_file_list_with_a_bad_key_names_it(tmp_path: Path) -> None:
    path = tmp_path / "file_list.json"
    path.write_text(json.dumps({"one": ["data/metadata/1.json"]}))
    with pytest.raises(DataError, match=r"file_list.json: key 'one' is not an item count"):
        read_file_list(path)


DEEP = '{"EXPECTED_QUANTITY": 3, "BIN_FCSKU_DATA": ' + "[" * 100_000 + "]" * 100_000 + "}"
LONG = "9" * 400


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (DEEP, "not valid JSON (nested too deeply to parse)"),
        ('{"EXPECTED_QUANTITY": ' + LONG + "}", "must be a non-negative integer, got 99999"),
        ('{"EXPECTED_QUANTITY": ' + "9" * 5000 + "}", "not valid JSON (Exceeds the limit"),
    ],
    ids=["deep", "400-digits", "5000-digits"],
)
def test_unparseable_metadata_is_a_data_error_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "00042.json"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_metadata(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    assert len(str(err.value)) < 300


def test_an_absurd_item_quantity_or_size_reads_as_unknown() -> None:
    meta = parse_metadata({"EXPECTED_QUANTITY": 2, "BIN_FCSKU_DATA": {"A1": {
        "quantity": int(LONG), "length": {"value": int(LONG)}, "weight": 1e300}}}, "00042")
    (item,) = meta.items
    assert (item.quantity, item.length_in, item.weight_lb) == (None, None, None)
    assert meta.consistent  # unknown, not contradicting


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"' + "1" * 5000 + '": []}', "is not an item count"),
        ('{"1": [{"id": "00001"}]}', "is not a metadata path"),
        ('{"1": ["data/metadata/00001.json"]', "not valid JSON"),
    ],
    ids=["deep", "long-key", "entry-not-a-path", "cut-short"],
)
def test_a_bad_file_list_is_a_data_error_naming_it(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "file_list.json"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_file_list(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    with pytest.raises(DataError, match="no such file list"):
        read_file_list(tmp_path / "absent.json")
