"""Monitoring tests' shared material (see :mod:`tests.support.monitoring`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.monitoring import baseline_model_dir, synthetic_photos


@pytest.fixture(scope="session")
def baseline_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return baseline_model_dir(tmp_path_factory.mktemp("monitored"))


@pytest.fixture(scope="session")
def same_renderer(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """40 synthetic bins of the training renderer, another seed: the JPEG bytes."""
    images = synthetic_photos(tmp_path_factory.mktemp("seed7") / "set")
    return [p.read_bytes() for p in sorted(images.glob("*.jpg"))]


@pytest.fixture(scope="session")
def abid_photos(sample_dir: Path) -> list[bytes]:
    """60 real ABID photos (CC BY-NC-SA 3.0 US, Amazon): another distribution."""
    return [p.read_bytes() for p in sorted((sample_dir / "images").glob("*.jpg"))[:60]]
