"""What the serving unit tests share: one small exported model, the real sample photos, and the
local endpoint's app served on a thread of this process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bincount.serving import handlers
from tests.support.servers import serve_settings, served
from tests.support.serving import MAX_BYTES, SAMPLE_IDS, make_model_dir


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def jpegs(sample_dir: Path) -> dict[str, bytes]:
    """The sample photos' bytes by image id."""
    return {i: (sample_dir / "images" / f"{i}.jpg").read_bytes() for i in SAMPLE_IDS}


@pytest.fixture(scope="session")
def expected(model_dir: Path, jpegs: dict[str, bytes]) -> dict[str, dict]:
    """What the handlers answer in this process, image by image."""
    model = handlers.model_fn(str(model_dir))
    return {
        i: handlers.predict_fn(handlers.input_fn(data, "image/jpeg"), model)[0]
        for i, data in jpegs.items()
    }


@pytest.fixture(scope="module")
def endpoint(model_dir: Path) -> Iterator[str]:
    """The local endpoint's app on a thread (one torch thread, a 1 MB request limit): its URL."""
    with served(serve_settings(
        f"model_dir={model_dir}", "serve.torch_threads=1", f"limits.max_request_bytes={MAX_BYTES}"
    )) as url:
        yield url
