"""Checks on a downloaded photo before it takes its final name."""

from pathlib import Path

from bincount.data.download import check_jpeg, unstorable


def test_check_jpeg_rejects_decompression_bombs(sample_dir: Path) -> None:
    photo = next((sample_dir / "images").glob("*.jpg"))
    assert check_jpeg(photo, max_pixels=89_478_485) is None
    reason = check_jpeg(photo, max_pixels=1000)
    assert reason is not None and "decompression-bomb limit of 1000 pixels" in reason


def test_an_id_too_long_for_a_file_name_is_refused_before_any_download(tmp_path: Path) -> None:
    assert unstorable("00042", tmp_path) is None
    assert unstorable("0" * 200, tmp_path) is None
    reason = unstorable("9" * 300, tmp_path)
    assert reason is not None and "is 300 characters" in reason and "255-byte limit" in reason
    assert "cannot be a file name" in str(unstorable("..", tmp_path))
