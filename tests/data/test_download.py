"""Checks on a downloaded photo before it takes its final name."""

from pathlib import Path

from bincount.data.download import check_jpeg


def test_check_jpeg_rejects_decompression_bombs(sample_dir: Path) -> None:
    photo = next((sample_dir / "images").glob("*.jpg"))
    assert check_jpeg(photo, max_pixels=89_478_485) is None
    reason = check_jpeg(photo, max_pixels=1000)
    assert reason is not None and "decompression-bomb limit of 1000 pixels" in reason
